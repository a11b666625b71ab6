"""An import killed with SIGKILL leaves a store of whole samples, and re-running completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atoken.data import MediaStore, StoreLayout, import_images, verify_store

TOTAL = 160
LAYOUT = StoreLayout(chunk_bytes=512, shard_chunks=4)

# The real importer, slowed down per image so the parent can kill it between commits.
CHILD = """
import sys, time
import atoken.data.importer as importer
from atoken.data import StoreLayout

real = importer.decode_image

def slow(data, **kwargs):
    time.sleep(0.02)
    return real(data, **kwargs)

importer.decode_image = slow
importer.import_images(
    [sys.argv[1]], sys.argv[2], layout=StoreLayout(chunk_bytes=512, shard_chunks=4),
    flush_samples=4, workers=1, progress=False,
)
"""


def _committed(store: Path) -> int:
    try:
        return int(
            json.loads((store / "zarr.json").read_text())["attributes"]["atoken"]["committed"]
        )
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


@pytest.fixture
def sources(tmp_path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    (tmp_path / "src").mkdir()
    images = {}
    for i in range(TOTAL):
        name = f"img{i:04d}.png"
        images[name] = rng.integers(0, 256, (8 + i % 9, 6 + i % 5, 3), dtype=np.uint8)
        Image.fromarray(images[name]).save(tmp_path / "src" / name)
    return images


def _check_whole_samples(store_path: Path, images: dict[str, np.ndarray]) -> int:
    store = MediaStore(store_path)
    names = sorted(images)
    assert store.names == tuple(names[: len(store)])  # a prefix, in order, no duplicates
    for i, name in enumerate(store.names):
        np.testing.assert_array_equal(store.read(i, verify=True), images[name])
    assert verify_store(store_path).ok
    return len(store)


def test_sigkill_midway_then_resume(tmp_path, sources):
    dst = tmp_path / "dst.zarr"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "src"), str(dst)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while _committed(dst) < 12 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    at_kill = _committed(dst)
    assert 12 <= at_kill < TOTAL, f"the import was not interrupted midway ({at_kill})"

    held = _check_whole_samples(dst, sources)
    assert held == at_kill

    report = import_images([str(tmp_path / "src")], dst, layout=LAYOUT, progress=False)
    assert report.already_stored == held and report.added == TOTAL - held
    assert _check_whole_samples(dst, sources) == TOTAL
    assert not list(dst.rglob("*.partial"))  # a killed write's temporary files are cleaned
