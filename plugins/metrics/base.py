"""The shape every metric has, and a running mean of per-image values.

Shapes: B images per update, as ``[B, 3, H, W]`` or a list of ``[3, H_i, W_i]`` in [0, 1].
"""

from __future__ import annotations

import abc

import torch

from atoken.core.errors import ConfigError
from atoken.losses.image_batch import ImageBatch, image_pairs

__all__ = ["ImageMetric", "PerImageMetric"]


class ImageMetric(abc.ABC):
    """``reset()``, ``update(prediction, target)``, ``compute() -> dict[str, float]``.

    ``distributional`` is True for a metric of two image distributions (a Fréchet distance),
    which needs many images and does not pair them; False for a per-image score.
    """

    name: str = ""
    distributional: bool = False

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every image seen."""

    @abc.abstractmethod
    def update(self, prediction: ImageBatch, target: ImageBatch) -> None:
        """Add a batch of (reconstruction, original) pairs."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric over everything seen since the last reset."""


class PerImageMetric(ImageMetric):
    """A metric that scores each (prediction, target) pair and reports the mean score."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._count = 0

    @abc.abstractmethod
    def score(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image scores ``[B]`` of two batches ``[B, 3, H, W]`` of one size."""

    @torch.no_grad()
    def update(self, prediction: ImageBatch, target: ImageBatch) -> None:
        preds, targets = image_pairs(prediction, target, who=self.name)
        if isinstance(prediction, torch.Tensor) and isinstance(target, torch.Tensor):
            scores = self.score(prediction.float(), target.float())  # one batch, one size
        else:
            scores = torch.cat(
                [
                    self.score(p[None].float(), t[None].float())
                    for p, t in zip(preds, targets, strict=True)
                ]
            )  # [B]
        self._total += float(scores.double().sum())
        self._count += scores.numel()

    def compute(self) -> dict[str, float]:
        if not self._count:
            raise ConfigError(f"{self.name}: no images yet; call update() before compute()")
        return {self.name: self._total / self._count}
