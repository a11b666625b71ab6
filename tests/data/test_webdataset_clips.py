"""Clips in WebDataset shards (``mp4``): decoded in the source, ``frames`` at a random start and
a crop drawn from the sample's position, a clip too short counted as a bad sample, and a video
task trained on them through ``atoken train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from atoken.cli import main
from atoken.core.errors import ConfigError
from atoken.data import SourceContext, build_source
from atoken.data.video_io import write_video

wds = pytest.importorskip("webdataset")


def _mp4(tmp: Path, frames: int, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, 1, 24, 32, generator=g)
    clip = (base + torch.linspace(0, 0.5, frames)[None, :, None, None]).clamp(0, 1)  # [3,T,H,W]
    return write_video(clip, tmp / f"c{seed}.mp4", fps=8).read_bytes()


def write_clip_shards(root: Path, lengths: list[int]) -> str:
    root.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(root / "clips-%06d.tar"), maxcount=3, verbose=0) as sink:
        for i, frames in enumerate(lengths):
            sink.write({"__key__": f"v{i:03d}", "mp4": _mp4(root, frames, i)})
    return str(root / f"clips-{{000000..{(len(lengths) - 1) // 3:06d}}}.tar")


def test_clips_are_windows_and_crops_of_their_position(tmp_path):
    urls = write_clip_shards(tmp_path / "shards", [10, 10, 10, 3, 10, 10])  # v003 too short
    table = {
        "source": "webdataset",
        "urls": urls,
        "keys": ["mp4"],
        "modality": "video",
        "frames": 4,
        "batch_size": 2,
        "crop_min": 16,
        "crop_max": 16,
        "heldout": ["clips-000001.tar/v005"],  # several shards: names are shard/key
    }
    source = build_source(table, SourceContext(max_bad_samples=10), where="test")
    assert source.modality == "video" and source.heldout[0].shape == (3, 10, 24, 32)
    seen = []
    for step in range(5):  # 10 positions: two epochs of the 5 training clips
        batch = source.batch(step)
        seen += source.sample_indices(step, 0)
        assert all(x.shape == (3, 4, 16, 16) and x.dtype == torch.float32 for x in batch)
        again = source.batch(step)  # a function of the position only
        assert all(torch.equal(a, b) for a, b in zip(batch, again, strict=True))
    assert source.bad >= 1  # the 3-frame clip, skipped and counted, never replaced
    keys = sorted(source.names[i].rsplit("/", 1)[1] for i in set(seen))
    assert keys == ["v000", "v001", "v002", "v003", "v004"]


def test_a_video_task_trains_on_clip_shards_through_atoken_train(tmp_path):
    urls = write_clip_shards(tmp_path / "shards", [12, 12, 12, 12])
    run = tmp_path / "run.toml"
    run.write_text(
        f"""
[run]
out_dir = "{tmp_path / "out"}"
[model]
preset = "tiny"
overrides = {{ depth = 1, decoder_depth = 1 }}
[train]
steps = 2
precision = "fp32"
log_every = 1
progress = false
data_workers = 1
[[tasks]]
name = "video_reconstruction"
tile_frames = 8
metrics = ["video_psnr"]
previews = 0
data = {{ source = "webdataset", urls = "{urls}", keys = ["mp4"], modality = "video", frames = 8, batch_size = 1, crop_min = 16, crop_max = 16, heldout = ["clips-000001.tar/v003"] }}
"""  # noqa: E501
    )
    result = CliRunner().invoke(main, ["train", str(run)])
    assert result.exit_code == 0, result.output
    records = [
        json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().split("\n") if x
    ]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all("video_reconstruction/loss" in r for r in train)
    assert any("video_reconstruction/video_psnr" in r for r in records if r["kind"] == "eval")


def test_a_list_of_frame_strides_gives_each_clip_one_of_them(tmp_path):
    """``frame_stride = [1, 2]`` (the paper samples strides of 1-3): clips decode whole and
    each training window takes every 1st or 2nd frame, drawn from its position."""
    root = tmp_path / "flat"
    root.mkdir()
    levels = torch.linspace(0.1, 0.9, 12)  # frame t is flat at levels[t]
    clip = levels[None, :, None, None].expand(3, 12, 16, 16).contiguous()
    data = write_video(clip, root / "flat.mp4", fps=8).read_bytes()
    with wds.ShardWriter(str(root / "f-%06d.tar"), maxcount=100, verbose=0) as sink:
        for i in range(6):
            sink.write({"__key__": f"f{i}", "mp4": data})
    table = {"source": "webdataset", "urls": str(root / "f-000000.tar"), "keys": ["mp4"],
             "modality": "video", "frames": 4, "frame_stride": [1, 2], "batch_size": 5,
             "crop_min": 8, "crop_max": 8}  # fmt: skip
    source = build_source(table, SourceContext(), where="test")
    steps = set()
    for step in range(4):
        for x in source.batch(step):
            means = x.mean(dim=(0, 2, 3))  # [4] one level per frame
            gap = float((means[1:] - means[:-1]).mean()) / float(levels[1] - levels[0])
            steps.add(round(gap))
            assert torch.allclose(means[1:] - means[:-1], means[1] - means[0], atol=0.02)
    assert steps == {1, 2}
    for bad in ([], [0], "2"):
        with pytest.raises(ConfigError, match="frame_stride"):
            build_source({**table, "frame_stride": bad}, SourceContext(), where="test")
