"""Stores on a real S3-protocol server on loopback (moto's server mode) through s3fs.

Skipped only when s3fs or moto is not installed (both are in the ``dev`` extra).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytest.importorskip("flask")  # moto's server mode

from atoken import SparseLatent
from atoken.cli import main
from atoken.core.coords import raster_coords
from atoken.data import (
    MediaStore,
    ZarrDataset,
    collate_list,
    read_latents,
    verify_store,
    write_latents,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """``storage_options`` of a moto S3 server on 127.0.0.1 with a fresh bucket."""
    import s3fs

    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    old = os.environ.get("AWS_EC2_METADATA_DISABLED")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        options = {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "key": "testing",
            "secret": "testing",
        }
        bucket = f"atoken-{uuid.uuid4().hex[:8]}"
        s3fs.S3FileSystem(**options).mkdir(bucket)
        yield options, bucket
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if old is None:
            os.environ.pop("AWS_EC2_METADATA_DISABLED", None)
        else:
            os.environ["AWS_EC2_METADATA_DISABLED"] = old


def test_import_and_read_over_s3(s3, tmp_path):
    import s3fs

    options, bucket = s3
    rng = np.random.default_rng(0)
    images = {f"p{i}.png": rng.integers(0, 256, (20 + i, 24, 3), np.uint8) for i in range(4)}
    (tmp_path / "raw").mkdir()
    for name, array in images.items():
        Image.fromarray(array).save(tmp_path / "raw" / name)
    s3fs.S3FileSystem(**options).put(str(tmp_path / "raw") + "/", f"{bucket}/raw/", recursive=True)

    url = f"s3://{bucket}/x.zarr"
    result = CliRunner().invoke(
        main,
        [
            "data", "import", "images", f"s3://{bucket}/raw/", url,
            "--storage-options", json.dumps(options), "--no-progress", "--chunk-kib", "1",
            "--shard-chunks", "2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "imported 4 images" in result.output

    store = MediaStore(url, options)
    assert store.names == tuple(sorted(images))
    assert verify_store(url, options).ok
    ds = ZarrDataset(url, options, crop=None, shuffle=False)
    for i, name in enumerate(store.names):
        assert torch.equal(ds[i], torch.from_numpy(images[name]).permute(2, 0, 1) / 255)
    crops = ZarrDataset(url, options, crop=(8, 16), seed=1, world_size=2, rank=0)
    loader = torch.utils.data.DataLoader(
        crops, batch_size=2, num_workers=2, collate_fn=collate_list
    )
    got = [x for batch in loader for x in batch]
    assert len(got) == 2 and all(torch.equal(a, crops[i]) for i, a in enumerate(got))


def test_latents_over_s3(s3):
    options, bucket = s3
    coords = raster_coords((3, 2, 2))
    latent = SparseLatent(torch.randn(12, 5), coords, [12], modality="video")
    url = f"s3://{bucket}/latents.zarr"
    write_latents(latent, url, storage_options=options, chunk_tokens=4)
    assert read_latents(url, storage_options=options).equal(latent)
    frames = read_latents(url, [0], box={"t": (1, 2)}, storage_options=options)
    assert torch.equal(frames.feats, latent.feats[4:8])
