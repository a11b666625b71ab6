"""Folder -> shards -> train: ``atoken data import images --format wds`` and the source."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("webdataset")

from atoken.cli import main
from atoken.core.errors import BadSampleError, ConfigError
from atoken.data.wds_writer import list_images, write_image_shards
from atoken.data.webdataset_source import WebDatasetSource
from tests.test_train_streaming import RUN


@pytest.fixture
def folder(tmp_path) -> Path:
    """7 images in two folders (PNG, JPEG and one BMP), one with a caption beside it."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for i in range(7):
        sub = root / ("cats" if i < 4 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), np.uint8))
        ext = ("png", "jpg", "bmp")[i % 3]
        image.save(sub / f"im.{i}.{ext}")
    (root / "cats" / "im.0.txt").write_text("a cat\n")
    return root


def test_import_writes_shards_by_count_with_keys_members_and_captions(folder, tmp_path):
    report = write_image_shards([str(folder)], tmp_path / "shards", shard_samples=3)
    assert report.samples == 7 and len(report.shards) == 3
    with tarfile.open(report.shards[0]) as tar:
        names = tar.getnames()
    assert names[:3] == ["cats/im_0.png", "cats/im_0.txt", "cats/im_1.jpg"]
    with tarfile.open(report.shards[0]) as tar:  # a JPEG is stored as it was, byte for byte
        member = tar.extractfile("cats/im_1.jpg").read()
    assert member == (folder / "cats" / "im.1.jpg").read_bytes()
    source = WebDatasetSource(urls=report.urls, caption_key="txt", crop_min=8, crop_max=16)
    assert len(source.names) == 7
    assert source.caption(0) == "a cat" and source.caption(1) == ""
    png = np.asarray(Image.open(folder / "cats" / "im.0.png"))
    assert torch.equal(source.read(0), torch.from_numpy(png.copy()).permute(2, 0, 1))
    bmp = source.read(2)  # the BMP was stored as a PNG: lossless
    assert bmp.shape == (3, 42, 48)


def test_import_closes_shards_by_size(folder, tmp_path):
    report = write_image_shards([str(folder)], tmp_path / "s", shard_bytes=4000)
    assert len(report.shards) >= 3
    sizes = [Path(s).stat().st_size for s in report.shards]
    assert all(size < 4000 + 3 * 6000 for size in sizes)  # closed once past the limit
    assert len(WebDatasetSource(urls=list(report.shards)).names) == 7


def test_bad_files_fail_or_are_skipped_and_keys_collide(folder, tmp_path):
    (folder / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadSampleError, match="broken"):
        write_image_shards([str(folder)], tmp_path / "a")
    report = write_image_shards([str(folder)], tmp_path / "b", skip_bad=True)
    assert report.samples == 7 and "broken" in report.skipped[0][0]
    with pytest.raises(ConfigError, match="already holds"):
        write_image_shards([str(folder)], tmp_path / "b", skip_bad=True)
    with pytest.raises(ConfigError, match="share the sample key"):
        list_images([str(folder), str(folder)])


def test_folder_to_shards_to_train_through_the_cli(folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["data", "import", "images", str(folder), str(tmp_path / "shards"), "--format", "wds",
         "--shard-samples", "4", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 7 images into 2 shards" in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("train on them with:"))
    data = line.removeprefix("train on them with: data = ").rstrip(" }")
    data += ", batch_size = 2, crop_min = 32, crop_max = 40 }"
    run = tmp_path / "run.toml"
    run.write_text(RUN.format(out=tmp_path / "out", steps=2, workers=2, data=data))
    result = runner.invoke(main, ["train", str(run)])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").open()]
    assert {r["kind"] for r in records} == {"train", "eval"}


def test_a_jpeg_cut_short_is_a_bad_sample_when_read(tmp_path):
    import webdataset as wds

    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "JPEG")
    with wds.TarWriter(str(tmp_path / "t.tar")) as sink:
        sink.write({"__key__": "ok", "jpg": buf.getvalue()})
        sink.write({"__key__": "cut", "jpg": buf.getvalue()[:200]})
    source = WebDatasetSource(urls=str(tmp_path / "t.tar"), heldout="ok")
    with pytest.raises(BadSampleError, match="'cut'"):
        source.read(source.names.index("cut"))
