"""The built-in video modality: tubelets, padding, conversions, files and typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import atoken
from atoken import ModalityInputError, TooManyTokensError
from atoken.data.video_io import read_video, video_info, write_gif, write_video
from atoken.modalities.video import to_video_tensor
from atoken.testing.strategies import videos


@pytest.fixture
def modality():
    return atoken.get_registry().modalities.create("video")


@settings(max_examples=25, deadline=None)
@given(videos(dtype=torch.uint8, max_side=20))
def test_uint8_clips_round_trip_exactly(x):
    m = atoken.get_registry().modalities.create("video", patch_size=8, temporal_patch=2)
    values, coords, meta = m.patchify(x)
    _, T, H, W = x.shape
    assert meta["size"] == [T, H, W]
    assert meta["grid"] == [-(-T // 2), -(-H // 8), -(-W // 8)]
    assert values.shape == (coords.shape[0], 2 * 8 * 8 * 3)
    assert bool((coords[:, 3] == 0).all())  # z = 0
    assert torch.equal(m.unpatchify(values, coords, meta), x.float() / 255)


def test_tubelet_layout_matches_the_image_layout(modality):
    """Each tubelet slot holds one frame's patch in the image modality's (ph, pw, c) order."""
    clip = torch.rand(3, 8, 32, 16)
    values, coords, _ = modality.patchify(clip)
    image = atoken.get_registry().modalities.create("image")
    for frame in range(8):
        img_values, img_coords, _ = image.patchify(clip[:, frame])
        step, slot = divmod(frame, 4)
        rows = coords[:, 0] == step
        assert torch.equal(coords[rows][:, 1:], img_coords[:, 1:])
        got = values[rows].reshape(-1, 4, 16 * 16 * 3)[:, slot]
        assert torch.equal(got, img_values.reshape(-1, 4, 16 * 16 * 3)[:, 0])


def test_short_clips_repeat_the_last_frame_and_crop_back(modality):
    clip = torch.rand(3, 5, 16, 16)
    values, coords, meta = modality.patchify(clip)
    assert meta["grid"] == [2, 1, 1] and values.shape[0] == 2
    second = values[coords[:, 0] == 1].reshape(4, 16, 16, 3)  # frames 4..7 of the padded clip
    for slot in range(4):
        assert torch.equal(second[slot], clip[:, 4].permute(1, 2, 0))
    assert modality.unpatchify(values, coords, meta).shape == (3, 5, 16, 16)


def test_frame_stride_and_input_forms_agree():
    m = atoken.get_registry().modalities.create("video", frame_stride=2)
    clip = torch.randint(0, 256, (3, 7, 10, 12), dtype=torch.uint8)
    expected = clip[:, ::2].float() / 255
    assert torch.equal(to_video_tensor(clip, frame_stride=2), expected)
    as_array = clip.permute(1, 2, 3, 0).numpy()  # [T, H, W, C]
    assert torch.equal(to_video_tensor(as_array, frame_stride=2), expected)
    as_frames = list(clip.unbind(1))
    assert torch.equal(to_video_tensor(as_frames, frame_stride=2), expected)
    values, coords, meta = m.patchify(clip)
    assert meta["size"] == [4, 10, 12]
    assert torch.equal(m.unpatchify(values, coords, meta), expected)


def test_grayscale_and_rgba_follow_the_image_rules():
    gray = torch.rand(1, 3, 8, 8)
    assert torch.equal(to_video_tensor(gray), gray.expand(3, -1, -1, -1))
    rgba = torch.rand(4, 3, 8, 8)
    assert torch.allclose(to_video_tensor(rgba), rgba[:3] * rgba[3:])


@pytest.mark.parametrize(
    "bad, words",
    [
        (torch.zeros(3, 0, 8, 8), "zero frames"),
        ([], "zero"),
        ([torch.zeros(3, 8, 8), torch.zeros(3, 8, 10)], "inconsistent size"),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), "zero frames"),
        (torch.full((3, 2, 8, 8), 2.0), "[0, 1]"),
        (torch.zeros(3, 8, 8), "[C, T, H, W]"),
        ("/nonexistent/atoken/clip.mp4", "no such file"),
    ],
)
def test_bad_inputs_raise_typed_errors_naming_the_problem(modality, bad, words):
    with pytest.raises(ModalityInputError, match="video") as info:
        modality.patchify(bad)
    assert words in str(info.value)


def test_a_corrupt_or_non_video_file_is_a_typed_error(modality, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 this is not a video container" * 50)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    image = tmp_path / "still.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    for path in (junk, text):
        with pytest.raises(ModalityInputError, match=r"not a readable video|no video stream"):
            modality.patchify(str(path))
    # A truncated mp4: a real header cut in the middle of its frames.
    clip = torch.rand(3, 12, 32, 32)
    whole = write_video(clip, tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(ModalityInputError):
        modality.patchify(str(cut))


def test_too_many_tokens_without_tiling(modality):
    small = atoken.get_registry().modalities.create("video", max_tokens=8)
    with pytest.raises(TooManyTokensError, match="tiles"):
        small.patchify(torch.zeros(3, 12, 32, 32))  # 3 x 2 x 2 = 12 tokens
    assert small.patchify(torch.zeros(3, 8, 32, 32))[0].shape[0] == 8


def test_mp4_and_gif_round_trip_through_pyav(tmp_path, modality):
    t = torch.linspace(0, 1, 10)[None, :, None, None]
    clip = (t * torch.ones(3, 10, 32, 48)).clamp(0, 1)  # a smooth fade: codec-friendly
    path = write_video(clip, tmp_path / "fade.mp4", fps=10)
    info = video_info(path)
    assert (info["height"], info["width"]) == (32, 48)
    decoded = read_video(path)  # uint8 [3, T, H, W]
    assert decoded.shape == (3, 10, 32, 48)
    err = (decoded.float() / 255 - clip).abs().mean()
    assert err < 0.03  # lossy, but the same pictures
    values, _, meta = modality.patchify(str(path))
    assert meta["size"] == [10, 32, 48] and values.shape[0] == 3 * 2 * 3
    assert read_video(path, frame_stride=3).shape[1] == 4
    assert read_video(path, start=4, max_frames=2).shape[1] == 2
    gif = write_gif(clip, tmp_path / "fade.gif", fps=10)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 10 and im.size == (48, 32)
