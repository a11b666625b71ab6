"""Tampered metadata is caught, not decoded silently: latent meta against coords and sizes,
dtype attributes against the stored arrays, the committed count against the data, checksums
on every array verify reads, and a missing shard is an error even without checksums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from atoken import ModalityInputError, Tokenizer
from atoken.core.errors import StoreIntegrityError
from atoken.data import (
    MediaStore,
    MediaWriter,
    StoreLayout,
    ZarrDataset,
    read_latents,
    verify_store,
    write_latents,
)
from atoken.data.latent_store import LatentStore


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    torch.manual_seed(0)
    return Tokenizer.from_preset("tiny", depth=1, decoder_depth=1).eval()


def _attrs(store: Path, **changes) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["atoken"].update(changes)
    (store / "zarr.json").write_text(json.dumps(meta))


def _encoded(tiny, tmp_path) -> Path:
    with torch.no_grad():
        latent = tiny.encode([torch.rand(3, 32, 48)])
    write_latents(latent, tmp_path / "lat.zarr", dtype="float16")
    return tmp_path / "lat.zarr"


def test_a_float16_latent_store_decodes(tiny, tmp_path):
    url = _encoded(tiny, tmp_path)
    back = read_latents(url)
    assert back.dtype == torch.float16
    with torch.no_grad():
        image = tiny.decode(back)[0]
    assert image.shape == (3, 32, 48) and image.dtype == torch.float32


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("size", [-5, 48], "size"),  # once decoded a 27x43 image
        ("size", [32, 480], "size"),  # a size the grid cannot hold
        ("grid", [1, 100000, 100000], "grid"),  # once allocated 30 TB
    ],
)
def test_tampered_latent_meta_is_refused_at_decode(tiny, tmp_path, key, value, match):
    url = _encoded(tiny, tmp_path)
    meta = zarr.open_array(url / "meta", mode="r+")
    doc = json.loads(str(meta[0]))
    doc[key] = value
    meta[0] = json.dumps(doc)
    latent = read_latents(url)
    with pytest.raises(ModalityInputError, match=match), torch.no_grad():
        tiny.decode(latent)


def test_a_relabelled_feats_dtype_is_refused(tiny, tmp_path):
    url = _encoded(tiny, tmp_path)
    _attrs(url, feats_dtype="bfloat16")  # same itemsize: would read garbage
    with pytest.raises(StoreIntegrityError, match=r"feats.*float16.*bfloat16"):
        LatentStore(url)


def _media(url, n: int = 7, **kw) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 256, (4, 5, 3), np.uint8) for _ in range(n)]
    with MediaWriter(url, layout=StoreLayout(chunk_bytes=64, shard_chunks=2), **kw) as w:
        for i, s in enumerate(samples):
            w.add(f"s{i}", s, caption=f"caption {i}", label="even" if i % 2 == 0 else "odd")
    return samples


def test_a_lowered_committed_count_is_caught_and_nothing_is_truncated(tmp_path):
    url = tmp_path / "m.zarr"
    _media(url)
    _attrs(url, committed=3)
    with pytest.raises(StoreIntegrityError, match="committed"):
        MediaStore(url)
    with pytest.raises(StoreIntegrityError, match="committed"):
        verify_store(url)
    with pytest.raises(StoreIntegrityError):
        MediaWriter(url)  # the next writer does not truncate the four hidden samples
    _attrs(url, committed=7)
    assert len(MediaStore(url)) == 7 and verify_store(url).ok


@pytest.mark.parametrize("array", ["captions", "names", "labels", "shapes"])
def test_a_flipped_byte_in_an_index_array_fails_verify(tmp_path, array):
    url = tmp_path / "m.zarr"
    _media(url)
    chunk = next(
        p for p in sorted((url / array).rglob("*")) if p.is_file() and p.name != "zarr.json"
    )
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreIntegrityError, match=array):
        verify_store(url)


def test_a_missing_shard_is_an_error_without_checksums(tmp_path):
    url = tmp_path / "m.zarr"
    _media(url)
    shards = sorted(p for p in (url / "data" / "c").rglob("*") if p.is_file())
    assert len(shards) > 2
    shards[1].unlink()
    dataset = ZarrDataset(url, verify=False)
    with pytest.raises(StoreIntegrityError, match="missing"):
        for i in range(len(dataset)):
            dataset[i]
