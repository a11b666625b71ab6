"""Video metrics: per-frame PSNR and SSIM, temporal flicker, and FVD.

Shapes: clips ``[3, T, H, W]`` in [0, 1], given as a list, a ``[B, 3, T, H, W]`` tensor, or
images (a ``[B, 3, H, W]`` tensor or a list of ``[3, H, W]``), which count as one-frame clips.
Each (prediction, target) pair must have one shape.

* ``video_psnr`` / ``video_ssim``: the image metrics on every frame, averaged over all frames
  of all clips (frames weigh equally).
* ``flicker``: the mean absolute difference of the frame-to-frame changes,
  ``mean |(y[t+1] - y[t]) - (x[t+1] - x[t])|``: 0 when the reconstruction changes over time
  exactly as the original, large when it flickers (tile seams show up here). One-frame clips
  contribute nothing.
* ``fvd``: the Fréchet distance
  (:func:`atoken.plugins.metrics.frechet.frechet_from_features`, shared with FID and
  FD-EffNet) between clip features of the reconstructions and of the originals. The feature
  network is pluggable: ``features="i3d"`` loads the standard FVD I3D network (the
  TorchScript ``i3d_torchscript.pt`` of StyleGAN-V / the FVD reference) from ``weights_path``,
  ``$ATOKEN_I3D_WEIGHTS`` or ``~/.cache/atoken/i3d_torchscript.pt``; nothing is downloaded, a
  missing file raises ``WeightsNotFoundError`` saying how to provide it. Any callable mapping
  ``[B, 3, T, H, W]`` in [0, 1] to ``[B, D]`` features can be passed instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from atoken.core.errors import ConfigError, ModalityInputError, WeightsNotFoundError
from atoken.losses.image_batch import pair_up
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.metrics.base import ImageMetric
from atoken.plugins.metrics.frechet import FeatureStatistics, frechet_distance

__all__ = [
    "FVD",
    "Flicker",
    "I3DFeatures",
    "VideoPSNR",
    "VideoSSIM",
    "clip_pairs",
    "i3d_weights_path",
]

I3D_FILE = "i3d_torchscript.pt"


def _clip_list(batch: Any, *, who: str, what: str) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 5:
            items = list(batch.unbind(0))
        elif batch.ndim == 4:
            items = [x[:, None] for x in batch.unbind(0)]  # images: one-frame clips
        else:
            raise ModalityInputError(
                f"{who}: {what} must be [B, 3, T, H, W] clips or [B, 3, H, W] images, "
                f"got {tuple(batch.shape)}"
            )
    elif isinstance(batch, (list, tuple)):
        items = [x if x.ndim == 4 else x[:, None] for x in batch]
    else:
        raise ModalityInputError(f"{who}: {what} must be a tensor or a list of clips")
    for i, x in enumerate(items):
        if x.ndim != 4 or x.shape[0] != 3:
            raise ModalityInputError(
                f"{who}: {what}[{i}] must be an RGB clip [3, T, H, W], got {tuple(x.shape)}"
            )
    return items


def clip_pairs(
    prediction: Any, target: Any, *, who: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Prediction and target clip lists ``[3, T, H, W]`` of equal length and matching shapes.

    Raises:
        ModalityInputError: a malformed batch, different lengths or a shape mismatch.
    """
    preds = _clip_list(prediction, who=who, what="prediction")
    return pair_up(preds, _clip_list(target, who=who, what="target"), who=who)


class _PerFrame(ImageMetric):
    accepts = ("clip",)
    """Mean of an image metric over every frame of every clip."""

    image_metric = ""

    def __init__(self, **params: Any) -> None:
        from atoken.plugins.metrics.pixel import PSNR, SSIM

        self._inner = {"psnr": PSNR, "ssim": SSIM}[self.image_metric](**params)
        self.reset()

    def reset(self) -> None:
        self._inner.reset()

    @torch.no_grad()
    def update(self, prediction: Any, target: Any) -> None:
        preds, targets = clip_pairs(prediction, target, who=self.name)
        for p, t in zip(preds, targets, strict=True):
            # frames as an image batch [T, 3, H, W]
            self._inner.update(p.transpose(0, 1).float(), t.transpose(0, 1).float())

    def compute(self) -> dict[str, float]:
        try:
            value = self._inner.compute()[self.image_metric]
        except ConfigError:
            raise ConfigError(f"{self.name}: no clips yet; call update() first") from None
        return {self.name: value}


class VideoPSNR(_PerFrame):
    """PSNR (dB) of every frame, averaged over frames. Args: ``data_range`` (1.0)."""

    name = "video_psnr"
    image_metric = "psnr"


class VideoSSIM(_PerFrame):
    """SSIM of every frame, averaged over frames. Args: ``data_range``, ``window_size``."""

    name = "video_ssim"
    image_metric = "ssim"


class Flicker(ImageMetric):
    """Mean absolute difference between the reconstruction's and the original's frame-to-frame
    changes (lower is better; 0 for identical motion)."""

    name = "flicker"
    accepts = ("clip",)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._total, self._count, self._clips = 0.0, 0, 0

    @torch.no_grad()
    def update(self, prediction: Any, target: Any) -> None:
        preds, targets = clip_pairs(prediction, target, who=self.name)
        for p, t in zip(preds, targets, strict=True):
            self._clips += 1
            if p.shape[1] < 2:
                continue
            dp = p[:, 1:].float() - p[:, :-1].float()  # [3, T-1, H, W]
            dt = t[:, 1:].float() - t[:, :-1].float()
            self._total += float((dp - dt).abs().double().sum())
            self._count += dp.numel()

    def compute(self) -> dict[str, float]:
        if not self._clips:
            raise ConfigError("flicker: no clips yet; call update() first")
        return {self.name: self._total / self._count if self._count else 0.0}


def i3d_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The I3D TorchScript file: ``path``, else ``$ATOKEN_I3D_WEIGHTS``, else
    ``~/.cache/atoken/i3d_torchscript.pt``.

    Raises:
        WeightsNotFoundError: no such file (the message says how to provide it).
    """
    how = (
        f"FVD needs the I3D feature network ({I3D_FILE}, the TorchScript file the FVD "
        "reference and StyleGAN-V use). Nothing is downloaded at run time: fetch it on a "
        "machine with internet access and pass weights_path=..., set ATOKEN_I3D_WEIGHTS, or "
        f"put it at ~/.cache/atoken/{I3D_FILE}; or pass features=<callable> for another "
        "video feature network."
    )
    candidates = [path] if path is not None else []
    if path is None and os.environ.get("ATOKEN_I3D_WEIGHTS"):
        candidates.append(os.environ["ATOKEN_I3D_WEIGHTS"])
    if path is None:
        candidates.append(Path.home() / ".cache" / "atoken" / I3D_FILE)
    for c in candidates:
        file = Path(os.fspath(c)).expanduser()
        if file.is_file():
            return file
    raise WeightsNotFoundError(f"{how} Looked for: {', '.join(map(str, candidates))}")


class I3DFeatures(torch.nn.Module):
    """The FVD I3D network (TorchScript): clips ``[B, 3, T, H, W]`` in [0, 1] -> ``[B, 400]``
    features, frames resized to 224 x 224 and scaled to [-1, 1] as the reference does."""

    def __init__(self, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.net = torch.jit.load(str(i3d_weights_path(weights_path)), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = clips.shape
        frames = clips.transpose(1, 2).reshape(B * T, C, H, W)  # [B*T, 3, H, W]
        frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
        x = frames.reshape(B, T, C, 224, 224).transpose(1, 2) * 2 - 1  # [B, 3, T, 224, 224]
        return self.net(x, rescale=False, resize=False, return_features=True)  # [B, D]


class FVD(ImageMetric):
    """Fréchet video distance between reconstructions and originals.

    Args:
        features: ``"i3d"`` (the standard network, from local weights) or a callable
            ``[B, 3, T, H, W] -> [B, D]``.
        weights_path: the I3D TorchScript file (for ``features="i3d"``).
        method: ``"sqrtm"`` or ``"eigh"`` (see :mod:`atoken.plugins.metrics.frechet`).
        frames: clips are cut into non-overlapping windows of this many frames (16, the FVD
            convention); shorter clips are used whole.

    Raises:
        WeightsNotFoundError: ``features="i3d"`` and no weights file.
    """

    name = "fvd"
    accepts = ("clip",)
    distributional = True

    def __init__(
        self,
        *,
        features: str | Callable[[torch.Tensor], torch.Tensor] = "i3d",
        weights_path: str | os.PathLike | None = None,
        method: str = "sqrtm",
        frames: int = 16,
    ) -> None:
        if features == "i3d":
            self.features: Callable[[torch.Tensor], torch.Tensor] = I3DFeatures(weights_path)
        elif callable(features):
            self.features = features
        else:
            raise ConfigError(f"fvd: features must be 'i3d' or a callable, got {features!r}")
        if not isinstance(frames, int) or frames < 1:
            raise ConfigError(f"fvd: frames must be a positive int, got {frames!r}")
        self.method, self.frames = method, frames
        self.reset()

    def reset(self) -> None:
        self._pred, self._target = FeatureStatistics(), FeatureStatistics()

    def _windows(self, clip: torch.Tensor) -> list[torch.Tensor]:
        T = clip.shape[1]
        if self.frames >= T:
            return [clip]
        return [clip[:, s : s + self.frames] for s in range(0, T - self.frames + 1, self.frames)]

    @torch.no_grad()
    def update(self, prediction: Any, target: Any) -> None:
        preds, targets = clip_pairs(prediction, target, who=self.name)
        for p, t in zip(preds, targets, strict=True):
            for stats, clip in ((self._pred, p), (self._target, t)):
                windows = torch.stack(self._windows(clip.float().clamp(0, 1)))  # [w, 3, T, H, W]
                stats.update(self.features(windows).double().cpu().numpy())

    def compute(self) -> dict[str, float]:
        if self._pred.count < 2 or self._target.count < 2:
            raise ConfigError("fvd: needs at least 2 clip windows per side; call update() first")
        mu1, s1 = self._pred.compute()
        mu2, s2 = self._target.compute()
        fd = frechet_distance(mu1, s1, mu2, s2, method=self.method)
        return {
            "fvd": fd["total"],
            "fvd_mean_term": fd["mean_term"],
            "fvd_cov_term": fd["cov_term"],
        }


@hookimpl
def register_metrics(register) -> None:
    register("video_psnr", VideoPSNR)
    register("video_ssim", VideoSSIM)
    register("flicker", Flicker)
    register("fvd", FVD)
