"""Damaged media stores raise typed errors naming the store, the array and the sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from atoken.cli import main
from atoken.data import (
    MediaStore,
    MediaWriter,
    StoreError,
    StoreIntegrityError,
    StoreLayout,
    StoreSchemaError,
    ZarrDataset,
    verify_store,
)
from atoken.data.storage import ATTRS_KEY

# 1 KiB shards of four 256 B chunks; each 768 B sample spans its own chunks
LAYOUT = StoreLayout(chunk_bytes=256, shard_chunks=4)
SAMPLES = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), np.uint8) for i in range(5)]


@pytest.fixture
def store(tmp_path) -> str:
    url = str(tmp_path / "s.zarr")
    with MediaWriter(url, layout=LAYOUT) as w:
        for i, s in enumerate(SAMPLES):
            w.add(f"img{i}.png", s)
    assert verify_store(url).ok
    return url


def _names_everything(exc: StoreError, url: str, array: str, sample: str) -> None:
    text = str(exc)
    if array == "attributes":  # the group's metadata, not an array
        assert url in text and "'atoken' attributes (zarr.json)" in text, text
        assert "array" not in text, text
    else:
        where = "all samples" if sample == "all" else f"sample {sample}"
        assert url in text and f"array {array!r}" in text and where in text, text
    assert exc.store == url and exc.array == array


def _flip_byte(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupt_chunk_byte(store):
    # shard 2 holds bytes 2048..3071; its first chunk (2048..2303) lies inside sample 2 only
    _flip_byte(Path(store) / "data" / "c" / "2", 10)
    with pytest.raises(StoreIntegrityError) as info:
        verify_store(store)
    _names_everything(info.value, store, "data", "2")
    assert "img2.png" in str(info.value) and info.value.sample == 2
    with pytest.raises(StoreIntegrityError, match="sample 2"):
        ZarrDataset(store, crop=None, shuffle=False).read(2)


def test_truncated_chunk_file(store):
    shard = Path(store) / "data" / "c" / "1"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(StoreIntegrityError) as info:
        verify_store(store)
    _names_everything(info.value, store, "data", "1")


def test_missing_shard_is_named(store):
    (Path(store) / "data" / "c" / "3").unlink()  # zarr would read zeros: atoken checks first
    with pytest.raises(StoreIntegrityError, match=r"'data/c/3' .* is missing") as info:
        verify_store(store)
    _names_everything(info.value, store, "data", "4")  # bytes 3072.. belong to sample 4


@pytest.mark.parametrize("array", ["offsets", "shapes", "checksums", "names"])
def test_missing_index_array(store, array):
    shutil.rmtree(Path(store) / array)
    with pytest.raises(StoreIntegrityError, match="missing") as info:
        MediaStore(store)
    _names_everything(info.value, store, array, "0..4")


def test_unknown_schema_version(store):
    group = zarr.open_group(store, mode="r+")
    group.attrs[ATTRS_KEY] = {**group.attrs[ATTRS_KEY], "version": 99}
    with pytest.raises(StoreSchemaError, match="version 99 is unknown") as info:
        MediaStore(store)
    _names_everything(info.value, store, "attributes", "all")
    with pytest.raises(StoreSchemaError):  # a writer refuses it too
        MediaWriter(store)


def test_not_an_atoken_store(tmp_path):
    zarr.open_group(tmp_path / "other.zarr", mode="w").create_array("x", shape=(2,), dtype="i4")
    with pytest.raises(StoreSchemaError, match="not a store written by atoken"):
        MediaStore(tmp_path / "other.zarr")
    with pytest.raises(StoreError, match="does not exist"):
        MediaStore(tmp_path / "nothing.zarr")


def _user_files(folder: Path) -> None:
    folder.mkdir()
    (folder / "a.txt").write_text("mine")


def _foreign_group(folder: Path) -> None:
    zarr.open_group(folder, mode="w").create_array("x", shape=(2,), dtype="i4")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_user_files, "is not an atoken store: it holds no zarr.json"),
        (Path.mkdir, "is not an atoken store: it holds no zarr.json"),
        (lambda folder: None, "does not exist"),
        (_foreign_group, "is not a store written by atoken: a zarr group without 'atoken'"),
    ],
    ids=["user-files", "empty-folder", "missing", "foreign-zarr-group"],
)
def test_a_folder_that_is_no_store_is_named_as_such(tmp_path, make, says):
    """#36 item 6: the message says what is missing and names no array (there is no array
    'attributes'), through the command a user runs."""
    folder = tmp_path / "folder"
    make(folder)
    result = CliRunner().invoke(main, ["data", "verify", str(folder)])
    assert result.exit_code != 0
    assert says in result.output and str(folder) in result.output, result.output
    assert "array" not in result.output, result.output


def test_offsets_that_disagree_with_shapes(store):
    offsets = zarr.open_array(Path(store) / "offsets", mode="r+")
    offsets[2] = offsets[2] + 5
    with pytest.raises(StoreIntegrityError, match="disagrees") as info:
        MediaStore(store)
    _names_everything(info.value, store, "offsets", "1")


def test_index_beyond_the_data(store):
    zarr.open_array(Path(store) / "data", mode="r+").resize((3000,))
    with pytest.raises(StoreIntegrityError, match="disagrees") as info:
        MediaStore(store)
    _names_everything(info.value, store, "data", "3")


def test_committed_count_beyond_the_index(store):
    group = zarr.open_group(store, mode="r+")
    group.attrs[ATTRS_KEY] = {**group.attrs[ATTRS_KEY], "committed": 9}
    with pytest.raises(StoreIntegrityError, match="committed index needs") as info:
        MediaStore(store)
    assert store in str(info.value) and "sample 0..8" in str(info.value)


def test_skip_bad_reports_what_it_skipped(store):
    _flip_byte(Path(store) / "data" / "c" / "2", 10)
    report = verify_store(store, skip_bad=True)
    assert not report.ok and report.samples == 5
    assert [(i, name) for i, name, _ in report.bad] == [(2, "img2.png")]
    result = CliRunner().invoke(main, ["data", "verify", store, "--no-progress"])
    assert result.exit_code != 0 and "sample 2" in result.output and "'data'" in result.output
    result = CliRunner().invoke(main, ["data", "verify", store, "--skip-bad", "--no-progress"])
    assert result.exit_code == 1
    assert "skipped sample 2 (img2.png)" in result.output and "4 of 5 samples OK" in result.output


def test_verify_cli_ok(store):
    result = CliRunner().invoke(main, ["data", "verify", store, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "5 of 5 samples OK" in result.output
