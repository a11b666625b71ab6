"""Embedded photos, image folders, the crop sampler and the PCA baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from atoken import ConfigError
from atoken.baselines import PCATokenizer
from atoken.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, CropSampler, ImageFolder, load_photo


def test_heldout_photos_are_never_trained_on():
    assert not set(HELDOUT_PHOTOS) & set(TRAIN_PHOTOS)
    photo = load_photo("astronaut")
    assert photo.dtype == torch.uint8 and photo.shape == (3, 512, 512)
    assert load_photo("china").shape == (3, 427, 640)  # scikit-learn's sample image
    with pytest.raises(ConfigError, match="unknown photo"):
        load_photo("nope")


def test_crop_sampler_is_deterministic_and_bounded():
    source = [torch.randint(0, 256, (3, 300, 120), dtype=torch.uint8)]
    sampler = CropSampler(source, batch_size=16, crop_min=64, crop_max=256, seed=1)
    a, b = sampler.batch(5), sampler.batch(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(x.shape != y.shape for x, y in zip(a, sampler.batch(6), strict=False))
    for x in a:
        assert 64 <= x.shape[1] <= 256 and 64 <= x.shape[2] <= 120  # capped by the image
        assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1


def test_image_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "sub" / "a.png")
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("skip me")
    folder = ImageFolder(tmp_path)
    assert folder.names == ("b.jpg", "sub/a.png")
    assert folder[1].shape == (3, 20, 30) and int(folder[0].min()) > 250
    with pytest.raises(ConfigError, match="no image files"):
        ImageFolder(tmp_path / "sub" / "..", extensions=(".gif",))
    with pytest.raises(ConfigError, match="does not exist"):
        ImageFolder(tmp_path / "missing")


def test_pca_baseline_is_optimal_for_low_rank_patches():
    g = torch.Generator().manual_seed(0)
    basis = torch.rand(3, 16 * 16 * 3, generator=g)  # patches living in a 3-dim affine space

    def image(seed):
        w = torch.rand(4, 3, generator=torch.Generator().manual_seed(seed)) / 3
        patches = (w @ basis).reshape(2, 2, 16, 16, 3)  # [gh, gw, p, p, c]
        return patches.permute(4, 0, 2, 1, 3).reshape(3, 32, 32)

    pca = PCATokenizer(latent_dim=3).fit([image(s) for s in range(10)])
    x = image(99)
    assert torch.allclose(pca.reconstruct([x])[0], x, atol=1e-5)
    worse = PCATokenizer(latent_dim=1).fit([image(s) for s in range(10)])
    assert float((worse.reconstruct([x])[0] - x).abs().max()) > 1e-3
    with pytest.raises(ConfigError, match="before fit"):
        PCATokenizer(latent_dim=2).reconstruct([x])
