"""Float media stores (schema version 2) and the generic whole-sample reader ZarrSamples.

Shapes: depth maps float32 ``[H, W]``; images uint8 ``[H, W, 3]``; videos ``[T, H, W, 3]``.
ZarrSamples gives float32 channel-first ``[3, H, W]``, ``[3, T, H, W]``, or ``[H, W]``.
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from atoken import ConfigError
from atoken.data import (
    MediaStore,
    MediaWriter,
    StoreError,
    StoreIntegrityError,
    StoreLayout,
    StoreSchemaError,
    ZarrDataset,
    ZarrImages,
    ZarrSamples,
    verify_store,
)
from atoken.data.storage import ATTRS_KEY, check_schema, open_group
from atoken.data.store import SCHEMA

# 1 KiB shards of four 256 B chunks: a float32 16 x 16 depth map fills one shard
TINY = StoreLayout(chunk_bytes=256, shard_chunks=4)
DEPTH_AXES = ("H", "W")
VIDEO_AXES = ("T", "H", "W", "C")
# data_bytes (since 0.2) witnesses committed; older readers ignore keys they do not know
V1_KEYS = ("schema", "version", "modality", "sample_axes", "committed", "data_bytes", "label_names")


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng(i)


def _depth(i: int, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    return (_rng(i).standard_normal(shape) * 10.0**i).astype(np.float32)  # [H, W]


def _write(url, samples, *, dtype, sample_axes, modality, **kw) -> None:
    with MediaWriter(
        url, modality=modality, sample_axes=sample_axes, dtype=dtype, layout=TINY, **kw
    ) as w:
        for i, s in enumerate(samples):
            assert w.add(f"s{i}", s)


def _uint8_images(url: Path) -> Path:
    _write(
        url,
        [np.zeros((2, 2, 3), np.uint8)],
        dtype="uint8",
        sample_axes=("H", "W", "C"),
        modality="image",
    )
    return url


def _bits(x: np.ndarray) -> np.ndarray:
    """The values' bit patterns (NaN-free data compares exactly, -0.0 != 0.0)."""
    return x.view({2: np.uint16, 4: np.uint32}[x.dtype.itemsize])


def _depth_store(url: str) -> tuple[str, list[np.ndarray]]:
    samples = [_depth(i) for i in range(3)]
    _write(url, samples, dtype="float32", sample_axes=DEPTH_AXES, modality="depth")
    return url, samples


@pytest.fixture
def depth_store() -> tuple[str, list[np.ndarray]]:
    """Three float32 depth maps in memory (fast)."""
    return _depth_store(f"memory://depth-{uuid.uuid4().hex}.zarr")


@pytest.fixture
def depth_files(tmp_path) -> tuple[str, list[np.ndarray]]:
    """Three float32 depth maps in a local folder (its chunk files can be damaged)."""
    return _depth_store(str(tmp_path / "depth.zarr"))


# -- round trips -------------------------------------------------------------------------------


def test_float32_depth_round_trip_is_bitwise(depth_store):
    url, samples = depth_store
    extremes = np.array([[0.0, -0.0, 1e-45, -3.4e38], [3.4e38, 1.5, -2.25, 1e-38]], np.float32)
    with MediaWriter(url, modality="depth", sample_axes=DEPTH_AXES, dtype="float32") as w:
        w.add("extremes", extremes)  # resuming with the same dtype appends
        w.add("empty", np.zeros((0, 5), np.float32))
    samples = [*samples, extremes, np.zeros((0, 5), np.float32)]
    store = MediaStore(url)
    assert store.dtype == np.float32 and store.modality == "depth"
    assert store.sample_axes == DEPTH_AXES and len(store) == 5
    for i, want in enumerate(samples):
        got = store.read(i)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(_bits(got), _bits(want))
        np.testing.assert_array_equal(_bits(store.read_rows(i, 1, 3)), _bits(want[1:3]))
        # checksums are over the stored (little-endian) bytes
        assert int(store.checksums[i]) == zlib.crc32(want.astype("<f4").tobytes())
    assert int(store.offsets[-1]) == sum(s.nbytes for s in samples)  # byte offsets


def test_float16_round_trip_and_exact_float32(tmp_path):
    url = str(tmp_path / "h.zarr")
    samples = [_rng(i).standard_normal((5, 7, 2)).astype(np.float16) for i in range(3)]
    samples.append(np.array([[[65504, -65504]], [[6e-8, -0.0]]], np.float16))  # extremes
    _write(url, samples, dtype="float16", sample_axes=("H", "W", "C"), modality="normals")
    store = MediaStore(url)
    assert store.dtype == np.float16
    reader = ZarrSamples(url)
    for i, want in enumerate(samples):
        np.testing.assert_array_equal(_bits(store.read(i)), _bits(want))
        x = reader[i]  # [C, H, W]
        assert x.dtype == torch.float32 and tuple(x.shape) == (2, *want.shape[:2])
        exact = torch.from_numpy(want.astype(np.float32)).permute(2, 0, 1)
        assert torch.equal(x, exact)  # float16 -> float32 is exact and unscaled


@settings(max_examples=8, deadline=None)
@given(
    st.lists(
        hnp.arrays(
            np.float32,
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=9),
            elements=st.floats(allow_nan=False, allow_infinity=False, width=32),
        ),
        max_size=4,
    )
)
def test_round_trip_property(samples):
    url = f"memory://float-{uuid.uuid4().hex}.zarr"
    _write(url, samples, dtype="float32", sample_axes=DEPTH_AXES, modality="depth")
    store = MediaStore(url)
    assert len(store) == len(samples)
    for i, want in enumerate(samples):
        np.testing.assert_array_equal(_bits(store.read(i)), _bits(want))


# -- schema versions ---------------------------------------------------------------------------


def test_versions_and_attrs(tmp_path, depth_store):
    url, _ = depth_store
    info = dict(open_group(url).attrs[ATTRS_KEY])
    assert info["version"] == 2 and info["dtype"] == "float32"
    images = _uint8_images(tmp_path / "u8.zarr")
    info8 = dict(open_group(images).attrs[ATTRS_KEY])
    assert info8["version"] == 1 and "dtype" not in info8  # uint8 stores are unchanged
    assert set(info8) == set(V1_KEYS)
    assert MediaStore(images).dtype == np.uint8


def test_version_1_reader_refuses_a_float_store(depth_store):
    url, _ = depth_store
    group = open_group(url)
    with pytest.raises(StoreSchemaError, match="version 2 is unknown"):
        check_schema(group, SCHEMA, (1,), store=url)  # what an older atoken checks


@pytest.mark.parametrize("attrs", [{"version": 1}, {"dtype": "float64"}])
def test_inconsistent_dtype_attrs_are_refused(depth_store, attrs):
    url, _ = depth_store
    group = open_group(url, mode="r+")
    group.attrs[ATTRS_KEY] = {**group.attrs[ATTRS_KEY], **attrs}
    with pytest.raises(StoreSchemaError, match="dtype"):
        MediaStore(url)


# -- writer errors -----------------------------------------------------------------------------


def test_append_with_another_dtype(depth_store, tmp_path):
    url, _ = depth_store
    with pytest.raises(StoreError, match="holds float32 samples, cannot append float16"):
        MediaWriter(url, modality="depth", sample_axes=DEPTH_AXES, dtype="float16")
    images = _uint8_images(tmp_path / "u8.zarr")
    with pytest.raises(StoreError, match="holds uint8 samples, cannot append float32"):
        MediaWriter(images, dtype="float32")
    assert len(MediaStore(url)) == 3 and len(MediaStore(images)) == 1  # untouched


def test_writer_rejects_bad_samples(tmp_path):
    with MediaWriter(
        tmp_path / "d.zarr", modality="depth", sample_axes=DEPTH_AXES, dtype="float32"
    ) as w:
        with pytest.raises(ConfigError, match=r"'f64'.*float32"):
            w.add("f64", np.zeros((2, 2), np.float64))
        with pytest.raises(ConfigError, match=r"'u8'.*float32"):
            w.add("u8", np.zeros((2, 2), np.uint8))
        with pytest.raises(ConfigError, match="axes"):
            w.add("rank", np.zeros((2, 2, 1), np.float32))
        for bad in (np.nan, np.inf, -np.inf):
            sample = np.ones((3, 4), np.float32)
            sample[2, 1] = bad
            with pytest.raises(ConfigError, match=r"'bad'.*non-finite.*\(2, 1\)"):
                w.add("bad", sample)
        assert w.add("ok", np.ones((3, 4), np.float32))  # rejected names stay free
    assert MediaStore(tmp_path / "d.zarr").names == ("ok",)
    with MediaWriter(tmp_path / "u8.zarr") as w, pytest.raises(ConfigError, match="uint8"):
        w.add("f", np.zeros((2, 2, 3), np.float16))


@pytest.mark.parametrize("dtype", ["float64", "int8", "f4", "uint16", None, np.float64, "x"])
def test_bad_dtype_name(tmp_path, dtype):
    with pytest.raises(ConfigError, match="dtype must be one of"):
        MediaWriter(tmp_path / "bad.zarr", dtype=dtype)
    assert not (tmp_path / "bad.zarr").exists()  # checked before anything is created


# -- ZarrSamples -------------------------------------------------------------------------------


def test_samples_of_an_image_store(tmp_path):
    url = tmp_path / "img.zarr"
    images = [_rng(i).integers(0, 256, (5 + i, 7, 3), np.uint8) for i in range(4)]
    _write(url, images, dtype="uint8", sample_axes=("H", "W", "C"), modality="image")
    reader = ZarrSamples(url, indices=[3, 1])
    assert len(reader) == 2 and reader.names == ("s3", "s1")
    assert reader.modality == "image" and reader.dtype == np.uint8
    assert reader.axes == ("C", "H", "W")
    for x, k in zip(reader, (3, 1), strict=True):
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, 5 + k, 7)
        want = torch.from_numpy(images[k]).permute(2, 0, 1).float() / 255
        assert torch.equal(x, want) and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert reader.length(0) == 8 and torch.equal(reader.window(0, 2, 5), reader[0][:, 2:5])
    assert torch.equal(reader[-1], reader[1])
    with pytest.raises(IndexError):
        reader[2]
    with pytest.raises(ConfigError, match="indices"):
        ZarrSamples(url, indices=[4])
    state = pickle.loads(pickle.dumps(reader))
    assert state._lazy._store is None and torch.equal(state[0], reader[0])


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_samples_of_a_video_store(tmp_path, dtype):
    url = tmp_path / "vid.zarr"
    if dtype == "uint8":
        videos = [_rng(i).integers(0, 256, (9, 4, 6, 3), np.uint8) for i in range(2)]
    else:
        videos = [_rng(i).standard_normal((9, 4, 6, 3)).astype(np.float32) for i in range(2)]
    _write(url, videos, dtype=dtype, sample_axes=VIDEO_AXES, modality="video")
    reader = ZarrSamples(url)
    assert reader.axes == ("C", "T", "H", "W") and reader.modality == "video"
    scale = 255.0 if dtype == "uint8" else 1.0
    for i, video in enumerate(videos):
        whole = reader[i]  # [C, T, H, W]
        assert tuple(whole.shape) == (3, 9, 4, 6) and whole.dtype == torch.float32
        want = torch.from_numpy(video.astype(np.float32) / np.float32(scale))
        assert torch.equal(whole, want.permute(3, 0, 1, 2))
        assert reader.length(i) == 9
        for start, stop, stride in ((0, 9, 1), (1, 8, 2), (3, 4, 1), (5, 100, 3), (6, 2, 1)):
            clip = reader.window(i, start, stop, stride)  # [C, t, H, W]
            assert torch.equal(clip, whole[:, start:stop:stride])
    with pytest.raises(ConfigError, match="stride"):
        reader.window(0, 0, 4, 0)
    with pytest.raises(ConfigError, match="start"):
        reader.window(0, -1, 4)


def test_samples_of_a_depth_store(depth_store):
    url, samples = depth_store
    reader = ZarrSamples(url)
    assert reader.axes == DEPTH_AXES and reader.dtype == np.float32
    assert reader.modality == "depth" and reader.names == ("s0", "s1", "s2")
    for i, want in enumerate(samples):
        x = reader[i]  # [H, W], values unscaled
        assert x.dtype == torch.float32 and torch.equal(x, torch.from_numpy(want))
        assert torch.equal(reader.window(i, 3, 11, 4), x[3:11:4])


# -- the image readers on float stores ---------------------------------------------------------


def test_image_readers_on_float_stores(tmp_path, depth_store):
    url = tmp_path / "fimg.zarr"
    images = [_rng(i).standard_normal((10, 12, 3)).astype(np.float32) * 4 for i in range(3)]
    _write(url, images, dtype="float32", sample_axes=("H", "W", "C"), modality="image")
    whole = ZarrDataset(url, crop=None, shuffle=False)
    for i, image in enumerate(images):
        assert torch.equal(whole[i], torch.from_numpy(image).permute(2, 0, 1))  # unscaled
    crops = ZarrDataset(url, crop=(4, 8), seed=1, shuffle=False)
    fast = ZarrDataset(url, crop=(4, 8), seed=1, shuffle=False, verify=False)
    for i in range(3):
        assert crops[i].shape[0] == 3 and torch.equal(crops[i], fast[i])
    with pytest.raises(StoreError, match="ZarrImages reads uint8 images"):
        ZarrImages(url)
    depth, _ = depth_store
    for reader in (ZarrDataset, ZarrImages):
        with pytest.raises(StoreError, match=r"\['H', 'W'\].*use ZarrSamples"):
            reader(depth)


# -- verify ------------------------------------------------------------------------------------


def test_verify_a_float_store(depth_store):
    url, samples = depth_store
    report = verify_store(url)
    assert report.ok and report.samples == 3
    assert report.bytes_checked == sum(s.nbytes for s in samples)  # stored bytes


def test_verify_a_corrupt_chunk(depth_files):
    url, _ = depth_files
    shard = Path(url) / "data" / "c" / "1"  # bytes 1024..2047: sample 1 only
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreIntegrityError, match="sample 1") as info:
        verify_store(url)
    assert info.value.array == "data" and "'s1'" in str(info.value)
    report = verify_store(url, skip_bad=True)
    assert [(i, name) for i, name, _ in report.bad] == [(1, "s1")]
    with pytest.raises(StoreIntegrityError, match="sample 1"):
        ZarrSamples(url)[1]


def test_verify_a_changed_value(depth_store):
    url, _ = depth_store
    data = open_group(url, mode="r+")["data"]  # valid chunks, changed bytes
    data[2048 + 5] = data[2048 + 5] ^ 1
    with pytest.raises(StoreIntegrityError, match="checksum mismatch") as info:
        verify_store(url)
    assert info.value.sample == 2
