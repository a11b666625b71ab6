"""Video metrics: per-frame PSNR/SSIM against the image metrics, flicker, FVD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import atoken
from atoken.core.errors import ConfigError, ModalityInputError, WeightsNotFoundError
from atoken.modalities.video.metrics import FVD, i3d_weights_path
from atoken.plugins.metrics.frechet import frechet_from_features

REGISTRY = atoken.get_registry()


def _clips(seed: int, n: int = 3, shape=(3, 6, 16, 20)):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(*shape, generator=g) for _ in range(n)]


@pytest.mark.parametrize("name, image_name", [("video_psnr", "psnr"), ("video_ssim", "ssim")])
def test_per_frame_metrics_equal_the_image_metric_over_all_frames(name, image_name):
    targets = _clips(0)
    preds = [(t + 0.05 * torch.randn_like(t)).clamp(0, 1) for t in targets]
    video = REGISTRY.metrics.create(name)
    video.update(preds, targets)
    image = REGISTRY.metrics.create(image_name)
    frames_p = torch.cat([p.transpose(0, 1) for p in preds])  # [B*T, 3, H, W]
    frames_t = torch.cat([t.transpose(0, 1) for t in targets])
    image.update(frames_p, frames_t)
    assert video.compute()[name] == pytest.approx(image.compute()[image_name], rel=1e-6)
    stacked = REGISTRY.metrics.create(name)
    stacked.update(torch.stack(preds), torch.stack(targets))  # [B, 3, T, H, W]
    assert stacked.compute()[name] == pytest.approx(video.compute()[name], rel=1e-6)


def test_flicker_is_zero_for_the_same_motion_and_grows_with_frame_noise():
    targets = _clips(1)
    metric = REGISTRY.metrics.create("flicker")
    shifted = [t + 0.05 for t in targets]  # a static error: the same motion
    metric.update(shifted, targets)
    assert metric.compute()["flicker"] == pytest.approx(0.0, abs=1e-6)
    values = []
    for amount in (0.02, 0.1):
        metric.reset()
        g = torch.Generator().manual_seed(2)
        # per-frame offsets: a static error would not flicker, this one does
        noisy = [t + amount * torch.randn(1, t.shape[1], 1, 1, generator=g) for t in targets]
        metric.update(noisy, targets)
        values.append(metric.compute()["flicker"])
    assert 0 < values[0] < values[1]
    metric.reset()
    metric.update(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))  # images: no motion
    assert metric.compute()["flicker"] == 0.0


def test_bad_clip_batches_are_typed_errors():
    for name in ("video_psnr", "video_ssim", "flicker"):
        metric = REGISTRY.metrics.create(name)
        with pytest.raises(ConfigError):
            metric.compute()
        with pytest.raises(ModalityInputError):
            metric.update([torch.rand(3, 4, 8, 8)], [torch.rand(3, 5, 8, 8)])
        with pytest.raises(ModalityInputError):
            metric.update(torch.rand(1, 2, 4, 8, 8), torch.rand(1, 2, 4, 8, 8))  # not RGB


def _toy_features(clips: torch.Tensor) -> torch.Tensor:
    """Mean colour and mean temporal change per channel: [B, 6]."""
    motion = (clips[:, :, 1:] - clips[:, :, :-1]).abs().mean(dim=(2, 3, 4))  # [B, 3]
    return torch.cat([clips.mean(dim=(2, 3, 4)), motion], dim=1)


def test_fvd_uses_the_shared_frechet_distance_and_a_pluggable_network():
    targets = _clips(3, n=6, shape=(3, 32, 8, 8))
    fvd = FVD(features=_toy_features, frames=16)
    fvd.update(targets, targets)
    assert fvd.compute()["fvd"] == pytest.approx(0.0, abs=1e-9)
    fvd.reset()
    preds = [(t * 0.5 + 0.25) for t in targets]
    fvd.update(preds, targets)
    got = fvd.compute()
    windows = lambda cs: torch.cat([_toy_features(torch.stack([c[:, :16], c[:, 16:]])) for c in cs])  # noqa: E731
    ref = frechet_from_features(windows(preds).numpy(), windows(targets).numpy())
    assert got["fvd"] == pytest.approx(ref["total"], rel=1e-6)
    assert got["fvd"] == pytest.approx(got["fvd_mean_term"] + got["fvd_cov_term"], rel=1e-9)
    assert math.isfinite(got["fvd"]) and got["fvd"] > 0
    with pytest.raises(ConfigError):
        FVD(features="c3d")


def test_fvd_without_i3d_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.delenv("ATOKEN_I3D_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="weights_path"):
        FVD()
    with pytest.raises(WeightsNotFoundError, match="ATOKEN_I3D_WEIGHTS"):
        i3d_weights_path(tmp_path / "missing.pt")


def test_fvd_loads_a_local_torchscript_network(tmp_path, monkeypatch):
    """The I3D path: any TorchScript file with the reference's call signature loads."""

    class Fake(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool):
            return x.mean(dim=(2, 3, 4))  # [B, 3]

    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(Fake()).save(str(path))
    monkeypatch.setenv("ATOKEN_I3D_WEIGHTS", str(path))
    fvd = REGISTRY.metrics.create("fvd")
    targets = _clips(4, n=3, shape=(3, 4, 12, 12))
    fvd.update([t * 0.5 for t in targets], targets)
    assert np.isfinite(fvd.compute()["fvd"])


def test_real_i3d_weights_give_clip_features():
    try:
        fvd = FVD()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))
    feats = fvd.features(torch.rand(2, 3, 16, 64, 64))
    assert feats.shape[0] == 2 and bool(torch.isfinite(feats).all())
