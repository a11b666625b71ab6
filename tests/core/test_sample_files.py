"""A modality's file and picture hooks (``atoken.core.sample_files``): ``load``/``save`` of
``.npy`` arrays that never run code, the image family's PNG files, video's middle frame, and
the kinds a modality may declare."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import atoken
from atoken.core.config import load_preset
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.modality import build_modality
from atoken.core.sample_files import SAMPLE_KINDS, visible
from atoken.plugins.manager import get_registry


@pytest.fixture(scope="module")
def tok():
    return atoken.create_tokenizer("tiny", depth=1, decoder_depth=1)


def test_npy_files_round_trip_and_never_unpickle(tok, tmp_path):
    video = tok.modality("video")
    clip = torch.rand(3, 4, 8, 8)
    (written,) = video.save(clip, tmp_path / "clip")
    assert written.name == "clip.npy" and torch.equal(video.load(written), clip)
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModalityInputError, match=r"evil\.npy"):
        video.load(tmp_path / "evil.npy")  # an object array would need pickle: refused
    with pytest.raises(ModalityInputError, match=r"cannot read .*x\.txt"):
        get_registry().modalities.create("pointcloud").load(tmp_path / "x.txt")


def test_images_load_from_files_and_save_as_png(tok, tmp_path):
    image = tok.modality("image")
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    loaded = image.load(tmp_path / "a.png")
    assert loaded.shape == (3, 20, 30) and float(loaded.max()) <= 1.0
    (png,) = image.save(loaded, tmp_path / "b")
    assert png.suffix == ".png"
    assert np.array_equal(np.asarray(Image.open(png)), pixels)  # 8 bits round trip exactly
    big = atoken.create_tokenizer("tiny", modality_params={"image": {"max_tokens": 4}})
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(atoken.TooManyTokensError):
        big.modality("image").load(tmp_path / "big.png")  # checked from the header


def test_draw_gives_pictures_or_nothing(tok):
    clip = torch.rand(3, 5, 8, 8)
    assert torch.equal(tok.modality("video").draw(clip), clip[:, 2])  # the middle frame
    depth = torch.arange(12.0).reshape(3, 4)
    grey = tok.modality("image").draw(depth)  # the default: a one-channel map in grey
    assert grey.shape == (3, 3, 4) and float(grey.min()) == 0 and float(grey.max()) == 1
    assert visible(torch.rand(5, 2, 2)) is None and tok.modality("image").draw("x.png") is None


def test_a_kind_must_be_known_and_set_exactly_when_set_valued():
    base = get_registry().modalities.get("pointcloud")
    config = load_preset("tiny")
    assert build_modality("pointcloud", base, config).sample_kind in SAMPLE_KINDS

    class NotASet(base):
        set_valued = False

    class Unknown(base):
        sample_kind = "cloud"

    for bad in (NotASet, Unknown):
        with pytest.raises(ConfigError, match="sample_kind must be one of"):
            build_modality("pointcloud", bad, config, plugin="p")
