"""CLI: ``atoken data import images``, ``atoken data verify`` and ``atoken encode``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from atoken import SparseLatent
from atoken.cli import main
from atoken.data import MediaStore, read_latents
from atoken.data.latent_store import LatentStore
from atoken.tokenizer import Tokenizer

SIZES = [(40, 56), (33, 20), (16, 16)]


def _invoke(*args: str):
    return CliRunner().invoke(main, [*args], catch_exceptions=False)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "photos"
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        (root / ("a" if i < 2 else "b")).mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, (h, w, 3), np.uint8)
        Image.fromarray(array).save(root / ("a" if i < 2 else "b") / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def store(images_dir) -> str:
    url = str(images_dir.parent / "photos.zarr")
    result = _invoke("data", "import", "images", str(images_dir), url, "--no-progress")
    assert result.exit_code == 0, result.output
    return url


def test_import_cli(images_dir, store, tmp_path):
    assert MediaStore(store).names == ("a/img0.png", "a/img1.png", "b/img2.png")
    again = _invoke("data", "import", "images", str(images_dir), store, "--no-progress")
    assert "imported 0 images" in again.output and "(3 already stored)" in again.output
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"img1.png": "a red thing"}))
    out = str(tmp_path / "c.zarr")
    result = _invoke(
        "data", "import", "images", str(images_dir / "a" / "*.png"), str(images_dir / "b"),
        out, "--captions", str(captions), "--labels", "folder", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    made = MediaStore(out)
    assert made.names == ("img0.png", "img1.png", "img2.png")
    assert made.caption(1) == "a red thing" and made.label(1) is None
    usage = CliRunner().invoke(main, ["data", "import", "images", out])
    assert usage.exit_code == 2 and "at least one SRC" in usage.output
    bad = CliRunner().invoke(main, ["data", "import", "images", str(tmp_path / "nope"), out])
    assert bad.exit_code == 1 and "does not exist" in bad.output


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, tuple[Path, Tokenizer]]:
    torch.manual_seed(0)
    out = {}
    for kind, extra in {
        "kl": {},
        "fsq": {"bottleneck": "fsq", "bottleneck_params": {"levels": [4] * 6, "groups": 8},
                "latent_dim": 48},
    }.items():  # fmt: skip
        model = Tokenizer.from_preset("tiny", depth=1, decoder_depth=1, **extra).eval()
        folder = tmp_path_factory.mktemp(kind) / "tok"
        model.save_pretrained(folder)
        out[kind] = (folder, model)
    return out


def _pixels(store: str) -> list[torch.Tensor]:
    s = MediaStore(store)
    return [torch.from_numpy(s.read(i)).permute(2, 0, 1).float() / 255 for i in range(len(s))]


def test_encode_kl_matches_tokenizer_encode(images_dir, store, tokenizers, tmp_path):
    folder, model = tokenizers["kl"]
    out = str(tmp_path / "lat.zarr")
    result = _invoke(
        "encode", "--checkpoint", str(folder), store, out, "--dtype", "float32",
        "--batch-size", "2", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0 and "encoded 3 samples" in result.output, result.output
    got = read_latents(out)
    images = _pixels(store)
    with torch.no_grad():
        want = SparseLatent.pack([model.encode(images[:2]), model.encode(images[2:])])
    assert torch.equal(got.coords, want.coords) and torch.equal(got.seqlens, want.seqlens)
    torch.testing.assert_close(got.feats, want.feats, atol=1e-5, rtol=1e-5)
    names = MediaStore(store).names
    assert [m.pop("source") for m in got.meta] == list(names)
    assert list(got.meta) == list(want.meta) and got.modality == ("image",) * 3
    # float16 by default; a rerun resumes (nothing to do); other data needs --overwrite
    half = str(tmp_path / "half.zarr")
    _invoke("encode", "--checkpoint", str(folder), store, half, "--no-progress")
    assert read_latents(half).dtype == torch.float16
    again = _invoke("encode", "--checkpoint", str(folder), store, half, "--no-progress")
    assert "encoded 3 samples" in again.output and len(LatentStore(half)) == 3
    other = CliRunner().invoke(
        main, ["encode", "--checkpoint", str(folder), str(images_dir / "b"), half, "--no-progress"]
    )
    assert other.exit_code == 1 and "--overwrite" in other.output


def test_encode_fsq_writes_ids(store, tokenizers, tmp_path):
    folder, model = tokenizers["fsq"]
    out = str(tmp_path / "fsq.zarr")
    result = _invoke(
        "encode", "--checkpoint", str(folder), store, out, "--dtype", "float32",
        "--batch-size", "2", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    images = _pixels(store)
    with torch.no_grad():
        parts = [model.tokenize(images[:2]), model.tokenize(images[2:])]
        codes = SparseLatent.pack([model.encode(images[:2]), model.encode(images[2:])])
    tokens = LatentStore(out).tokens()
    assert torch.equal(tokens.ids, torch.cat([p.ids for p in parts]).to(tokens.ids.dtype))
    assert torch.equal(tokens.coords, codes.coords)
    assert torch.equal(read_latents(out).feats, codes.feats)
    one = LatentStore(out).tokens([1])
    assert torch.equal(one.ids, parts[0].per_sample()[1].to(one.ids.dtype))
