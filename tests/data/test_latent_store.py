"""Latent store: SparseLatent/ids round trips, sample selection, box queries that read only
the chunks they need, and typed errors."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.storage import LocalStore, WrapperStore

from atoken import LatentValidationError, SparseLatent
from atoken.core.coords import raster_coords
from atoken.data import (
    StoreError,
    StoreIntegrityError,
    StoreSchemaError,
    read_latents,
    write_latents,
)
from atoken.data.latent_store import LatentStore, read_box
from atoken.data.storage import ATTRS_KEY
from atoken.testing.strategies import sparse_latents


def _raster_sorted(latent: SparseLatent) -> SparseLatent:
    """Oracle: each sample's tokens sorted by (t, z, y, x), the order the store keeps."""
    parts = []
    for part in latent.unpack():
        rows = sorted(range(part.num_tokens), key=lambda r: tuple(part.coords[r, [0, 3, 2, 1]]))
        rows = torch.tensor(rows, dtype=torch.long)
        parts.append(
            SparseLatent(
                part.feats[rows],
                part.coords[rows],
                part.seqlens,
                modality=part.modality,
                meta=part.meta,
            )
        )
    if not parts:
        return latent
    return SparseLatent.pack(parts)


def _memory_url() -> str:
    return f"memory://lat-{uuid.uuid4().hex}.zarr"


@given(sparse_latents(max_samples=5), st.sampled_from(["float32", "float16", "bfloat16"]))
def test_round_trip_memory(latent, dtype):
    url = _memory_url()
    write_latents(latent, url, dtype=dtype, chunk_tokens=4, shard_chunks=2)
    back = read_latents(url)
    want = _raster_sorted(latent).to(dtype=getattr(torch, dtype))
    assert back.equal(want)


@settings(max_examples=20)
@given(sparse_latents(max_samples=4), st.data())
def test_round_trip_local_with_ids_and_selection(latent, data):
    G = data.draw(st.integers(1, 3))
    ids = torch.randint(0, 4096, (latent.num_tokens, G), dtype=torch.int32)
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "l.zarr")
        write_latents(latent, url, ids=ids, chunk_tokens=3)
        tagged = latent.replace(feats=torch.cat([latent.feats, ids.float()], dim=1))
        want = _raster_sorted(tagged)  # ids ride along as extra channels in the oracle
        store = LatentStore(url)
        assert store.latents().equal(want.replace(feats=want.feats[:, : latent.channels]))
        tokens = store.tokens()
        assert torch.equal(tokens.ids, want.feats[:, latent.channels :].int())
        assert tokens.meta == want.meta and torch.equal(tokens.coords, want.coords)
        B = latent.batch_size
        picks = data.draw(st.lists(st.integers(0, B - 1), max_size=4)) if B else []
        got = read_latents(f"file://{url}", indices=picks)
        sel = want.select(picks)
        assert got.equal(sel.replace(feats=sel.feats[:, : latent.channels]))


@given(sparse_latents(min_samples=1, max_samples=3, max_coord=5), st.data())
def test_box_query_equals_filtering(latent, data):
    url = _memory_url()
    write_latents(latent, url, chunk_tokens=2, shard_chunks=None)
    i = data.draw(st.integers(0, latent.batch_size - 1))
    bound = st.one_of(st.none(), st.integers(-1, 6))
    box = {
        axis: (data.draw(bound), data.draw(bound))
        for axis in data.draw(st.lists(st.sampled_from("txyz"), unique=True, max_size=4))
    }
    got = read_latents(url, indices=[i], box=box)
    part = _raster_sorted(latent).select([i])
    keep = torch.ones(part.num_tokens, dtype=torch.bool)
    for axis, (a, b) in box.items():
        col = part.coords[:, "txyz".index(axis)]
        keep &= (col >= a if a is not None else True) & (col < b if b is not None else True)
    assert torch.equal(got.feats, part.feats[keep]) and torch.equal(got.coords, part.coords[keep])
    assert got.seqlens.tolist() == [int(keep.sum())] and got.meta == part.meta


def test_append_equals_pack(tmp_path):
    url = tmp_path / "a.zarr"
    a = SparseLatent(torch.randn(5, 3), raster_coords((1, 1, 5)), [2, 3], modality="image")
    b = SparseLatent(torch.randn(4, 3), raster_coords((1, 2, 2)), [0, 4], modality="video")
    write_latents(a, url, mode="a")  # creates
    assert write_latents(b, url, mode="a") == 4
    assert read_latents(url).equal(SparseLatent.pack([a, b]))
    with pytest.raises(StoreError, match="cannot append"):
        write_latents(SparseLatent(torch.randn(1, 2), raster_coords((1, 1, 1)), [1]), url, mode="a")
    write_latents(a, url)  # mode "w" replaces
    assert read_latents(url).equal(a)


def test_empty_latent(tmp_path):
    empty = SparseLatent(torch.zeros(0, 6), torch.zeros(0, 4, dtype=torch.int32), [])
    write_latents(empty, tmp_path / "e.zarr", dtype="float16")
    back = read_latents(tmp_path / "e.zarr")
    assert back.batch_size == 0 and back.feats.shape == (0, 6) and back.dtype == torch.float16


class _Recording(WrapperStore):
    """Records every (key, byte range) read."""

    def __init__(self, store):
        super().__init__(store)
        self.reads: list[tuple[str, object]] = []

    async def get(self, key, prototype, byte_range=None):
        self.reads.append((key, byte_range))
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        self.reads.extend(key_ranges)
        return await self._store.get_partial_values(prototype, key_ranges)


def _video(T: int = 16) -> SparseLatent:
    coords = raster_coords((T, 8, 8))  # [T*64, 4], t slowest
    feats = torch.arange(len(coords) * 4, dtype=torch.float32).reshape(-1, 4)
    return SparseLatent(feats, coords, [len(coords)], modality="video", meta=[{"grid": [T, 8, 8]}])


def test_frame_query_reads_only_its_chunks(tmp_path):
    video = _video()
    write_latents(
        video, tmp_path / "v.zarr", chunk_tokens=64, shard_chunks=None
    )  # a chunk per frame
    rec = _Recording(LocalStore(tmp_path / "v.zarr", read_only=True))
    got = read_box(rec, 0, t=(5, 7))
    assert got.coords[:, 0].unique().tolist() == [5, 6] and got.num_tokens == 128
    assert torch.equal(got.feats, video.feats[5 * 64 : 7 * 64])
    row_chunks = {k for k, _ in rec.reads if k.startswith(("feats/c", "coords/c"))}
    assert row_chunks == {"feats/c/5/0", "feats/c/6/0", "coords/c/5/0", "coords/c/6/0"}


def test_frame_query_reads_a_fraction_of_a_shard(tmp_path):
    video = _video(T=32)
    write_latents(video, tmp_path / "v.zarr", chunk_tokens=64, shard_chunks=32)  # one shard
    rec = _Recording(LocalStore(tmp_path / "v.zarr", read_only=True))
    read_box(rec, 0, t=(3, 4))
    feats_reads = [r for k, r in rec.reads if k == "feats/c/0/0"]
    assert feats_reads and all(r is not None for r in feats_reads)  # byte ranges only
    assert len(feats_reads) == 2  # the shard's index, then the one inner chunk of frame 3


def test_latent_store_errors(tmp_path):
    url = tmp_path / "l.zarr"
    write_latents(_video(T=2), url)
    with pytest.raises(LatentValidationError, match="overflow"):
        write_latents(
            SparseLatent(torch.full((1, 1), 1e6), raster_coords((1, 1, 1)), [1]),
            tmp_path / "o.zarr",
            dtype="float16",
        )
    with pytest.raises(StoreError, match="holds no ids"):
        LatentStore(url).tokens()
    bad = tmp_path / "bad.zarr"
    shutil.copytree(url, bad)
    zarr.open_array(bad / "offsets", mode="r+")[1] = 7
    with pytest.raises(StoreIntegrityError, match="disagrees") as info:
        read_latents(bad)
    assert str(bad) in str(info.value) and "array 'offsets'" in str(info.value)
    assert "sample 0" in str(info.value)
    shutil.rmtree(bad / "offsets")
    with pytest.raises(StoreIntegrityError, match="missing"):
        read_latents(bad)
    group = zarr.open_group(url, mode="r+")
    group.attrs[ATTRS_KEY] = {**group.attrs[ATTRS_KEY], "version": 7}
    with pytest.raises(StoreSchemaError, match="version 7"):
        read_latents(url)
