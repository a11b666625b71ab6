"""Store ownership: writes go only into a missing path, an empty folder or a store of the
same kind; ``--overwrite`` replaces only such a store, never a source; a failed write leaves
the previous store as it was (written aside, then swapped)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from PIL import Image

from atoken import LatentValidationError, SparseLatent, Tokenizer
from atoken.cli import main
from atoken.core.coords import raster_coords
from atoken.core.errors import StoreError, StoreSchemaError
from atoken.data import MediaStore, MediaWriter, read_latents, write_latents
from atoken.data.latent_store import LatentStore
from atoken.data.ownership import check_target, recover, writing
from atoken.data.store import SCHEMA as MEDIA


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (what must survive a refused write)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("my project")
    (root / "src" / "main.py").write_text("print('hi')")
    return root


def _images(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), np.uint8)).save(root / f"im{i}.png")
    return root


def _latent(b: int = 2, meta=None) -> SparseLatent:
    torch.manual_seed(b)
    coords = torch.cat([raster_coords((1, 2, 3))] * b)  # b samples of 6 tokens
    return SparseLatent(torch.randn(6 * b, 4), coords, [6] * b, meta=meta)


def _media(url, n: int = 2) -> None:
    with MediaWriter(url) as w:
        for i in range(n):
            w.add(f"m{i}", np.full((2, 3, 3), i, np.uint8))


def test_write_latents_refuses_user_folders_and_other_stores_and_leaves_them_intact(tmp_path):
    proj = _project(tmp_path / "proj")
    before = _tree(proj)
    with pytest.raises(StoreError, match=r"holds files atoken did not write \(README.md, src\)"):
        write_latents(_latent(), proj)  # the default mode "w"
    with pytest.raises(StoreError, match="holds files"):
        write_latents(_latent(), proj, mode="a")
    assert _tree(proj) == before
    media = tmp_path / "media.zarr"
    _media(media)
    with pytest.raises(StoreSchemaError, match=r"'atoken\.media' store, not an 'atoken\.latents'"):
        write_latents(_latent(), media)
    assert MediaStore(media).names == ("m0", "m1")
    file = tmp_path / "notes.txt"
    file.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        write_latents(_latent(), file)
    assert file.read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_latents(_latent(3), empty) == 3  # an empty folder is a fine place for a new store


def test_write_latents_replaces_its_own_store_and_a_failed_write_keeps_the_old(tmp_path):
    url = tmp_path / "lat.zarr"
    first = _latent(2)
    write_latents(first, url)
    with pytest.raises(LatentValidationError, match="meta: sample 0 cannot be stored as JSON"):
        write_latents(_latent(3, meta=[{"x": object()}] * 3), url)
    assert read_latents(url).equal(first)  # untouched, not emptied
    second = _latent(3)
    assert write_latents(second, url) == 3  # "w" replaces a latent store
    assert read_latents(url).equal(second)
    assert [p.name for p in tmp_path.iterdir() if "atoken-new" in p.name or "old" in p.name] == []


def test_overwrite_import_into_user_files_or_its_own_source_is_refused(tmp_path):
    runner = CliRunner()
    photos = _images(tmp_path / "photos")
    docs = _project(tmp_path / "mydocs")
    kept = _tree(docs), _tree(photos)
    harmful = [
        [str(photos), str(docs), "--overwrite"],  # a folder of user files
        [str(photos), str(photos), "--overwrite"],  # its own source
        [str(photos / "*.png"), str(photos), "--overwrite"],  # the source, by a glob
        [str(photos), str(tmp_path), "--overwrite"],  # a folder containing the source
    ]
    for args in harmful:
        result = runner.invoke(main, ["data", "import", "images", *args, "--no-progress"])
        assert result.exit_code == 1 and "StoreError" in result.output, (args, result.output)
    assert "is (or contains) the source" in result.output
    assert (_tree(docs), _tree(photos)) == kept
    # a media store atoken wrote is replaced, with the new samples
    store = tmp_path / "store.zarr"
    _media(store, 5)
    result = runner.invoke(
        main, ["data", "import", "images", str(photos), str(store), "--overwrite", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert MediaStore(store).names == ("im0.png", "im1.png", "im2.png")


def test_a_failed_overwrite_import_leaves_the_previous_store(tmp_path):
    url = tmp_path / "s.zarr"
    _media(url, 3)
    before = _tree(url)
    with pytest.raises(RuntimeError), MediaWriter(url, overwrite=True) as w:
        w.add("new", np.zeros((2, 2, 3), np.uint8))
        w.flush()  # committed to the aside copy only
        raise RuntimeError("the import fails")
    assert _tree(url) == before and MediaStore(url).names == ("m0", "m1", "m2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s.zarr.atoken-lock", "s.zarr"]


@pytest.mark.parametrize("stage", ["before_swap", "mid_swap"])
def test_a_replacement_killed_during_the_swap_is_mended_by_the_next_writer(tmp_path, stage):
    url = tmp_path / "s.zarr"
    _media(url, 2)
    before = _tree(url)
    aside = tmp_path / ".s.zarr.atoken-new-deadbeef"
    _media(aside, 4)  # a complete replacement that never got swapped in
    if stage == "mid_swap":  # killed between the two renames: the old store is aside too
        url.rename(tmp_path / ".s.zarr.atoken-old-deadbeef")
    recover(url)
    assert _tree(url) == before
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".atoken-lock"))
    assert left == ["s.zarr"]
    with MediaWriter(url) as w:  # and a writer does the same before it writes
        assert w.committed == 2


def test_memory_urls_follow_the_same_rule(tmp_path):
    url = f"memory://own-{uuid.uuid4().hex}/lat.zarr"
    write_latents(_latent(2), url)
    with pytest.raises(StoreSchemaError):
        _media(url)
    replacement = _latent(4)
    write_latents(replacement, url)
    assert read_latents(url).equal(replacement)
    assert check_target(url, schema="atoken.latents") == "append"
    with pytest.raises(RuntimeError), writing(url, schema="atoken.latents", overwrite=True) as t:
        assert t.state == "replace" and "atoken-new" in str(t.url)
        write_latents(_latent(1), t.url)
        raise RuntimeError
    assert read_latents(url).equal(replacement)


def test_a_zarr_group_of_someone_else_is_never_written(tmp_path):
    theirs = zarr.open_group(tmp_path / "g.zarr", mode="w")
    theirs.create_array("data", shape=(3,), dtype="uint8", fill_value=9)
    for attempt in (
        lambda: write_latents(_latent(), tmp_path / "g.zarr"),
        lambda: _media(tmp_path / "g.zarr"),
    ):
        with pytest.raises(StoreSchemaError, match="zarr group atoken did not write"):
            attempt()
    assert zarr.open_group(tmp_path / "g.zarr", mode="r")["data"][:].tolist() == [9, 9, 9]
    assert check_target(tmp_path / "nothing", schema=MEDIA) == "new"


def test_atoken_encode_never_deletes_a_project_folder(tmp_path):
    model = Tokenizer.from_preset("tiny", depth=1, decoder_depth=1).eval()
    model.save_pretrained(tmp_path / "ck")
    proj = _project(tmp_path / "proj")
    before = _tree(proj)
    runner = CliRunner()
    for extra in ([], ["--overwrite"]):
        result = runner.invoke(
            main, ["encode", "--checkpoint", str(tmp_path / "ck"), "photos", str(proj), *extra]
        )
        assert result.exit_code == 1 and "holds files atoken did not write" in result.output
    assert _tree(proj) == before
    images = _images(tmp_path / "imgs", 2)
    inside = runner.invoke(
        main,
        ["encode", "--checkpoint", str(tmp_path / "ck"), str(images), str(images), "--no-progress"],
    )
    assert inside.exit_code == 1 and "is (or contains) the source" in inside.output
    out = tmp_path / "lat.zarr"
    for extra in ([], ["--overwrite"]):  # a latent store is atoken's own: resumed, or replaced
        ok = runner.invoke(
            main,
            [
                "encode",
                "--checkpoint",
                str(tmp_path / "ck"),
                str(images),
                str(out),
                "--no-progress",
                *extra,
            ],
        )
        assert ok.exit_code == 0 and "encoded 2 samples" in ok.output, ok.output
        assert len(LatentStore(out)) == 2
