"""Media store: round trips of ragged samples, resume by name, import of image files."""

from __future__ import annotations

import io
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from atoken import ConfigError, ModalityInputError
from atoken.data import MediaStore, MediaWriter, StoreLayout, StoreSchemaError, import_images
from atoken.data.importer import decode_image, list_image_sources
from atoken.data.pixels import to_image_tensor
from atoken.data.store import SCHEMA, SCHEMA_VERSION
from atoken.testing.strategies import images

TINY = StoreLayout(chunk_bytes=256, shard_chunks=4)  # many chunks and shards for small data


@st.composite
def ragged_samples(draw, *, max_samples: int = 8) -> list[np.ndarray]:
    """uint8 [H, W, 3] samples, zero-pixel ones included (H or W may be 0)."""
    out = []
    for _ in range(draw(st.integers(0, max_samples))):
        H, W = draw(st.integers(0, 24)), draw(st.integers(0, 24))
        seed = draw(st.integers(0, 2**31 - 1))
        out.append(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))
    return out


def _write(url, samples, *, flush_samples=3, **kw):
    with MediaWriter(url, layout=TINY, flush_samples=flush_samples, **kw) as w:
        for i, s in enumerate(samples):
            assert w.add(f"s{i:03d}", s, caption=f"c{i}", label=("odd", "even")[i % 2])
    return w


def _check_round_trip(url, samples):
    store = MediaStore(url)
    assert len(store) == len(samples)
    assert store.names == tuple(f"s{i:03d}" for i in range(len(samples)))
    for i, s in enumerate(samples):
        got = store.read(i)
        assert got.dtype == np.uint8 and got.shape == s.shape
        np.testing.assert_array_equal(got, s)
        np.testing.assert_array_equal(store.read_rows(i, 1, 4), s[1:4])
        assert store.caption(i) == f"c{i}" and store.label(i) == ("odd", "even")[i % 2]


@settings(max_examples=20)
@given(ragged_samples(), st.integers(1, 5))
def test_round_trip_memory(samples, flush_samples):
    url = f"memory://rt-{uuid.uuid4().hex}.zarr"
    _write(url, samples, flush_samples=flush_samples)
    _check_round_trip(url, samples)


@settings(max_examples=20)
@given(ragged_samples(max_samples=5))
def test_round_trip_local_and_file_url(samples):
    with tempfile.TemporaryDirectory() as tmp:
        _write(Path(tmp) / "a.zarr", samples)
        _check_round_trip(str(Path(tmp) / "a.zarr"), samples)
        _check_round_trip(f"file://{tmp}/a.zarr", samples)


def test_empty_store_and_schema_attributes(tmp_path):
    _write(tmp_path / "e.zarr", [])
    store = MediaStore(tmp_path / "e.zarr")
    assert len(store) == 0 and store.names == ()
    assert store.info["schema"] == SCHEMA and store.info["version"] == SCHEMA_VERSION
    assert store.sample_axes == ("H", "W", "C") and store.modality == "image"
    with pytest.raises(IndexError):
        store.read(0)


@settings(max_examples=20)
@given(ragged_samples(max_samples=6), st.integers(0, 6))
def test_resume_appends_only_new_names(samples, first):
    """A second writer skips names already committed and continues the same arrays."""
    url = f"memory://resume-{uuid.uuid4().hex}.zarr"
    first = min(first, len(samples))
    _write(url, samples[:first])
    with MediaWriter(url, layout=TINY, flush_samples=2) as w:
        added = [
            w.add(f"s{i:03d}", s, caption=f"c{i}", label=("odd", "even")[i % 2])
            for i, s in enumerate(samples)
        ]
    assert added == [i >= first for i in range(len(samples))]
    _check_round_trip(url, samples)


def test_writer_without_clean_exit_keeps_only_committed(tmp_path):
    url = tmp_path / "x.zarr"
    samples = [np.full((4, 5, 3), i, np.uint8) for i in range(7)]
    with pytest.raises(RuntimeError), MediaWriter(url, layout=TINY, flush_samples=3) as w:
        for i, s in enumerate(samples):
            w.add(f"s{i:03d}", s)
        raise RuntimeError("crash before the last flush")
    store = MediaStore(url)
    assert len(store) == 6  # two flushes of three; the seventh was never committed
    assert all(np.array_equal(store.read(i), samples[i]) for i in range(6))


def test_writer_rejects_bad_samples(tmp_path):
    with MediaWriter(tmp_path / "x.zarr") as w:
        with pytest.raises(ConfigError, match="uint8"):
            w.add("f", np.zeros((2, 2, 3), np.float32))
        with pytest.raises(ConfigError, match="axes"):
            w.add("r", np.zeros((2, 2), np.uint8))


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@given(images(min_side=1, max_side=20, dtype=torch.uint8), st.sampled_from(["RGB", "L", "RGBA"]))
def test_decode_matches_the_image_modality(image, mode):
    """Import conversion = the image modality's (grayscale repeated, alpha premultiplied)."""
    array = image.permute(1, 2, 0).numpy()  # [H, W, 3]
    if mode == "L":
        array = array[..., 0]
    elif mode == "RGBA":
        array = np.concatenate([array, array[..., :1]], axis=2)
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    got = decode_image(buf.getvalue())  # [H, W, 3] uint8
    want = to_image_tensor(np.array(Image.open(buf)), min_side=1)  # [3, H, W] float
    want = (want * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_import_folder_glob_captions_labels(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for name in ("cats/a.png", "cats/b.png", "dogs/c.png", "d.jpg"):
        arrays[name] = rng.integers(0, 256, (9 + len(arrays), 7, 3), dtype=np.uint8)
        _save(tmp_path / "src" / name, arrays[name])
    (tmp_path / "src" / "cats" / "a.txt").write_text("a cat\n")
    (tmp_path / "src" / "notes.md").write_text("not an image")
    report = import_images(
        [str(tmp_path / "src")],
        tmp_path / "s.zarr",
        captions="sidecar",
        labels="folder",
        progress=False,
        layout=TINY,
    )
    assert (report.added, report.already_stored, report.committed) == (4, 0, 4)
    store = MediaStore(tmp_path / "s.zarr")
    assert store.names == ("cats/a.png", "cats/b.png", "d.jpg", "dogs/c.png")
    for i, name in enumerate(store.names):
        if name.endswith(".png"):  # lossless
            np.testing.assert_array_equal(store.read(i), arrays[name])
        else:
            assert store.shape(i) == arrays[name].shape
    assert [store.caption(i) for i in range(4)] == ["a cat", "", "", ""]
    assert [store.label(i) for i in range(4)] == ["cats", "cats", None, "dogs"]
    again = import_images([str(tmp_path / "src")], tmp_path / "s.zarr", progress=False)
    assert (again.added, again.already_stored, again.committed) == (0, 4, 4)
    globbed = list_image_sources([str(tmp_path / "src" / "*" / "*.png")])
    assert [s.name for s in globbed] == ["cats/a.png", "cats/b.png", "dogs/c.png"]


def test_import_reports_or_raises_bad_files(tmp_path):
    _save(tmp_path / "src" / "ok.png", np.zeros((3, 3, 3), np.uint8))
    (tmp_path / "src" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ModalityInputError, match=r"bad\.png"):
        import_images([str(tmp_path / "src")], tmp_path / "a.zarr", progress=False)
    report = import_images(
        [str(tmp_path / "src")], tmp_path / "b.zarr", skip_bad=True, progress=False
    )
    assert report.added == 1 and [name for name, _ in report.bad] == ["bad.png"]


def test_import_source_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        list_image_sources([str(tmp_path / "missing")])
    _save(tmp_path / "a" / "x.png", np.zeros((2, 2, 3), np.uint8))
    _save(tmp_path / "b" / "x.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"the sample name 'x\.png'"):
        list_image_sources([str(tmp_path / "a"), str(tmp_path / "b")])


def test_a_store_killed_while_being_created_resumes_and_a_foreign_group_is_kept(tmp_path):
    import zarr

    # atoken writes its attributes first: a writer killed before creating every array left
    # an atoken store with nothing committed, which the next writer completes
    half = zarr.open_group(tmp_path / "h.zarr", mode="w", attributes={"atoken": {}})
    half.attrs["atoken"] = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "modality": "image",
        "sample_axes": ["H", "W", "C"],
        "committed": 0,
        "label_names": [],
    }
    half.create_array("data", shape=(3,), dtype="uint8")
    _write(tmp_path / "h.zarr", [np.ones((2, 2, 3), np.uint8)])
    _check_round_trip(tmp_path / "h.zarr", [np.ones((2, 2, 3), np.uint8)])
    # a group without atoken's attributes is someone else's, even with an array named data
    other = zarr.open_group(tmp_path / "o.zarr", mode="w")
    other.create_array("data", shape=(3,), dtype="uint8", fill_value=7)
    for overwrite in (False, True):
        with pytest.raises(StoreSchemaError, match="zarr group atoken did not write"):
            MediaWriter(tmp_path / "o.zarr", overwrite=overwrite)
    assert zarr.open_group(tmp_path / "o.zarr", mode="r")["data"][:].tolist() == [7, 7, 7]
