"""The built-in image modality: conversions, padding, guards and typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from PIL import Image

import atoken
from atoken import ModalityInputError, TooManyTokensError
from atoken.data.pixels import to_image_tensor
from atoken.testing.strategies import images


@pytest.fixture
def modality():
    return atoken.get_registry().modalities.create("image")


@given(images(dtype=torch.uint8))
def test_uint8_round_trips_exactly_after_scaling(x):
    m = atoken.get_registry().modalities.create("image", patch_size=8)
    values, coords, meta = m.patchify(x)
    assert torch.equal(m.unpatchify(values, coords, meta), x.float() / 255)
    assert bool((coords[:, [0, 3]] == 0).all())  # t = z = 0
    assert values.shape == (coords.shape[0], 4 * 8 * 8 * 3)
    assert bool((values.reshape(-1, 4, 8 * 8 * 3)[:, 1:] == 0).all())  # slots 1..3 empty


def test_padding_replicates_edges_and_grid_counts(modality):
    x = torch.rand(3, 17, 33)
    values, coords, meta = modality.patchify(x)
    assert meta["size"] == [17, 33] and meta["grid"] == [1, 2, 3]
    assert values.shape[0] == 6 and coords[:, 1].max() == 2 and coords[:, 2].max() == 1
    patch = values[-1].reshape(4, 16, 16, 3)[0]  # bottom-right patch [ph, pw, c]
    assert torch.equal(patch[1:, 0], patch[0:1, 0].expand(15, 3))  # rows below H repeat row 16


def test_numpy_pil_and_tensor_inputs_agree(modality):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert torch.equal(to_image_tensor(rgb), expected)
    assert torch.equal(to_image_tensor(Image.fromarray(rgb)), expected)
    assert torch.equal(to_image_tensor(torch.from_numpy(rgb).permute(2, 0, 1)), expected)


def test_grayscale_and_rgba_rules(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = to_image_tensor(gray)
    assert out.shape == (3, 3, 4) and torch.equal(out[0], out[2])
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = [[255, 0], [51, 255]]
    out = to_image_tensor(Image.fromarray(rgba, "RGBA"))
    assert torch.allclose(out[:, 0, 1], torch.zeros(3))  # transparent -> black
    assert torch.allclose(out[:, 1, 0], torch.full((3,), 200 / 255 * 0.2))
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert torch.allclose(to_image_tensor(str(path)), out)


def test_batch_of_different_sizes_packs(modality):
    xs = [torch.rand(3, 16, 16), torch.rand(3, 40, 20), torch.rand(3, 5, 70)]
    latent = modality.pack(xs)
    assert latent.seqlens.tolist() == [1, 6, 5]
    for x, y in zip(xs, modality.unpack(latent), strict=True):
        assert torch.equal(x, y)


def test_not_an_image_and_truncated_file(tmp_path, modality):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(ModalityInputError, match="not a readable image"):
        modality.patchify(text)
    good = tmp_path / "photo.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModalityInputError, match=r"truncated.jpg"):
        modality.patchify(truncated)
    with pytest.raises(ModalityInputError, match="no such file"):
        modality.patchify(tmp_path / "missing.png")


def test_max_tokens_guard_is_typed():
    m = atoken.get_registry().modalities.create("image", max_tokens=4)
    with pytest.raises(TooManyTokensError, match="max_tokens=4"):
        m.patchify(torch.rand(3, 48, 48))
    assert m.patchify(torch.rand(3, 32, 32))[0].shape[0] == 4


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(3, 0, 8), "too small"),
        (torch.zeros(3, 1, 1), "too small"),
        (torch.full((3, 8, 8), float("nan")), "NaN"),
        (torch.full((3, 8, 8), 1.5), r"\[0, 1\]"),
        (torch.zeros(2, 8, 8), "expected"),
        ("nonexistent.png", "no such file"),
    ],
)
def test_bad_inputs_raise_named_errors(modality, bad, match):
    with pytest.raises(ModalityInputError, match=match):
        modality.patchify(bad)


def test_bad_config_is_typed():
    with pytest.raises(ModalityInputError, match="patch_size"):
        atoken.get_registry().modalities.create("image", patch_size=0)
