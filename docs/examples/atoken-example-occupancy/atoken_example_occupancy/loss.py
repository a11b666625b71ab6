"""The ``occupancy_bce`` loss: binary cross-entropy of occupancy probabilities.

Shapes: prediction and target are lists of grids ``[X_i, Y_i, Z_i]`` (or one tensor, e.g. a
batch ``[B, X, Y, Z]``) of the same shapes; predictions are probabilities in [0, 1] (what the
``occupancy`` head decodes), targets 0/1 (bool, integer or float). The loss is the mean over
all voxels of all samples, so a large grid weighs more than a small one (each voxel counts
once).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import atoken
from atoken.core.errors import ConfigError

__all__ = ["OccupancyBCELoss"]


def _grids(x: Any, what: str) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, torch.Tensor) for v in x):
        return list(x)
    raise atoken.ModalityInputError(
        f"occupancy_bce: {what} must be a tensor or a non-empty list of tensors, "
        f"got {type(x).__name__}"
    )


class OccupancyBCELoss(nn.Module):
    """``-(w t log p + (1 - t) log(1 - p))`` averaged over every voxel, p clamped to
    ``[eps, 1 - eps]``.

    Args:
        pos_weight: the weight w of occupied voxels (> 1 for sparse grids, where a model that
            predicts "empty" everywhere is otherwise nearly right).
        eps: the clamp that keeps the logarithms finite.
    """

    name = "occupancy_bce"

    def __init__(self, *, pos_weight: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(pos_weight, (int, float)) or not pos_weight > 0:
            raise ConfigError(f"occupancy_bce: pos_weight must be > 0, got {pos_weight!r}")
        if not isinstance(eps, float) or not 0 < eps < 0.5:
            raise ConfigError(f"occupancy_bce: eps must be a float in (0, 0.5), got {eps!r}")
        self.pos_weight, self.eps = float(pos_weight), eps

    def forward(self, prediction: Any, target: Any, context: Mapping[str, Any]) -> torch.Tensor:
        preds, targets = _grids(prediction, "prediction"), _grids(target, "target")
        if len(preds) != len(targets):
            raise atoken.ModalityInputError(
                f"occupancy_bce: {len(preds)} predictions but {len(targets)} targets"
            )
        total, count = None, 0
        for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
            if p.shape != t.shape or p.numel() == 0 or not p.is_floating_point():
                raise atoken.ModalityInputError(
                    f"occupancy_bce: prediction[{i}] {tuple(p.shape)} {p.dtype} and target[{i}] "
                    f"{tuple(t.shape)} must have one non-empty shape, the prediction float"
                )
            p = p.float().clamp(self.eps, 1 - self.eps)
            t = t.to(p.device, torch.float32)
            bce = -(self.pos_weight * t * p.log() + (1 - t) * (1 - p).log())  # [X, Y, Z]
            total = bce.sum() if total is None else total + bce.sum()
            count += p.numel()
        return total / count

    def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(prediction, target, context) for the loss contract: two 4 x 5 x 6 grids, the
        prediction probabilities that need grad."""
        g = torch.Generator().manual_seed(0)
        prediction = (0.05 + 0.9 * torch.rand(2, 4, 5, 6, generator=g)).requires_grad_(True)
        target = (torch.rand(2, 4, 5, 6, generator=g) < 0.3).float()
        return prediction, target, {}
