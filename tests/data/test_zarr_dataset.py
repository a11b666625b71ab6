"""ZarrDataset: deterministic epochs, DDP shards, crops, worker processes, training source."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from atoken import ConfigError
from atoken.data import MediaWriter, StoreLayout, ZarrDataset, ZarrImages, collate_list
from atoken.data.sources import SourceContext, build_source

N = 40


def _image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (20 + i % 7, 30 - i % 5, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("zd") / "s.zarr")
    with MediaWriter(url, layout=StoreLayout(chunk_bytes=1024, shard_chunks=8)) as w:
        for i in range(N):
            w.add(f"img{i:03d}.png", _image(i))
    return url


@given(
    n=st.integers(0, N),
    world=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    epoch=st.integers(0, 100),
    drop_last=st.booleans(),
)
def test_ranks_partition_each_epoch(store, n, world, seed, epoch, drop_last):
    """Disjoint shares; together every sample (minus n % w with drop_last); equal lengths
    with drop_last, within one without; the same for the same (seed, epoch)."""
    kw = {"indices": list(range(n)), "seed": seed, "world_size": world, "drop_last": drop_last}
    shares = []
    for rank in range(world):
        ds = ZarrDataset(store, rank=rank, **kw)
        ds.set_epoch(epoch)
        got = ds.epoch_indices()
        assert len(got) == len(ds)
        again = ZarrDataset(store, rank=rank, **kw).epoch_indices(epoch)
        np.testing.assert_array_equal(got, again)
        shares.append(got.tolist())
    flat = [i for share in shares for i in share]
    assert len(flat) == len(set(flat))  # no sample read twice in the epoch
    lengths = {len(share) for share in shares}
    if drop_last:
        assert len(flat) == n - n % world and lengths == {n // world}
    else:
        assert sorted(flat) == list(range(n)) and max(lengths) - min(lengths) <= 1


def test_epochs_and_seeds_change_the_order(store):
    ds = ZarrDataset(store, seed=3)
    e0, e1 = ds.epoch_indices(0), ds.epoch_indices(1)
    assert sorted(e0) == sorted(e1) == list(range(N)) and not np.array_equal(e0, e1)
    assert not np.array_equal(e0, ZarrDataset(store, seed=4).epoch_indices(0))
    assert ZarrDataset(store, shuffle=False).epoch_indices(5).tolist() == list(range(N))


def test_crops_are_bounded_and_deterministic(store):
    ds = ZarrDataset(store, crop=(8, 16), seed=1, shuffle=False)
    fast = ZarrDataset(store, crop=(8, 16), seed=1, shuffle=False, verify=False)
    for i in range(N):
        x = ds[i]
        assert x.dtype == torch.float32 and x.shape[0] == 3
        assert 8 <= x.shape[1] <= 16 and 8 <= x.shape[2] <= 16
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        assert torch.equal(x, ds[i]) and torch.equal(x, fast[i])  # rows-only read agrees
    shapes0 = [tuple(ds[i].shape) for i in range(N)]
    ds.set_epoch(1)
    assert shapes0 != [tuple(ds[i].shape) for i in range(N)]
    repeated = ZarrDataset(store, crop=(8, 16), indices=[0] * 12)  # a crop per read
    assert len({tuple(repeated[i].shape) for i in range(12)}) > 1


def test_whole_images_and_fixed_crops(store):
    whole = ZarrDataset(store, crop=None, shuffle=False)
    for i in (0, 7):
        want = torch.from_numpy(_image(i)).permute(2, 0, 1).float() / 255
        assert torch.equal(whole[i], want)
    fixed = ZarrDataset(store, crop=12, shuffle=False)
    assert {tuple(fixed[i].shape) for i in range(5)} == {(3, 12, 12)}
    big = ZarrDataset(store, crop=100, shuffle=False)
    assert tuple(big[0].shape) == (3, *_image(0).shape[:2])  # capped by the image


def test_worker_processes_read_the_same_samples(store):
    ds = ZarrDataset(store, crop=(8, 16), seed=2, world_size=2, rank=1)
    ds.set_epoch(3)
    state = pickle.loads(pickle.dumps(ds))
    assert state._lazy._store is None  # an open store is never pickled
    single = [ds[i] for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_list)
    multi = [x for batch in loader for x in batch]
    assert len(multi) == len(single) == N // 2
    assert all(torch.equal(a, b) for a, b in zip(single, multi, strict=True))


def test_invalid_arguments(store):
    with pytest.raises(ConfigError, match="rank"):
        ZarrDataset(store, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="crop"):
        ZarrDataset(store, crop=(10, 5))
    with pytest.raises(ConfigError, match="indices"):
        ZarrDataset(store, indices=[N])
    with pytest.raises(IndexError):
        ZarrDataset(store)[N]


def test_training_source_from_a_store(store):
    table = {"source": "media_store", "url": store, "batch_size": 3, "crop_min": 8}
    source = build_source(
        {**table, "crop_max": 16, "heldout": ["img005.png"]}, SourceContext(), where="t"
    )
    assert source.modality == "image" and source.heldout_names == ("img005.png",)
    assert len(source.sampler.items) == N - 1 and "img005.png" not in source.sampler.items.names
    expect = torch.from_numpy(_image(5)).permute(2, 0, 1).float() / 255
    assert torch.equal(source.heldout[0], expect)
    batch = source.batch(0, 0)
    assert len(batch) == 3 and all(8 <= x.shape[1] <= 16 for x in batch)
    default = build_source(
        {"source": "media_store", "url": f"file://{store}"}, SourceContext(), where="t"
    )
    assert default.heldout_names == (f"img{N - 1:03d}.png",)  # the last sample by default
    with pytest.raises(ConfigError, match="heldout"):
        build_source({**table, "heldout": ["nope.png"]}, SourceContext(), where="t")
    # ranks draw from disjoint shares of the training samples
    shares = [
        build_source(table, SourceContext(rank=r, world_size=2), where="t").sampler.shard
        for r in range(2)
    ]
    assert not set(shares[0]) & set(shares[1]) and len(shares[0] + shares[1]) == N - 1


def test_zarr_images_sequence(store):
    images = ZarrImages(Path(store), indices=[3, 1])
    assert images.names == ("img003.png", "img001.png") and len(images) == 2
    assert images[1].dtype == torch.uint8 and images[1].shape == (3, 20 + 1, 30 - 1)


def test_memory_store_and_empty_samples():
    url = "memory://zarr-dataset-test.zarr"
    with MediaWriter(url, overwrite=True) as w:
        w.add("empty.png", np.zeros((0, 5, 3), np.uint8))
        w.add("small.png", _image(1))
    ds = ZarrDataset(url, crop=(8, 16), shuffle=False)
    assert ds[0].shape == (3, 0, 5) and 8 <= ds[1].shape[1] <= 16
    assert len(ZarrDataset(url, crop=None, indices=[])) == 0
