"""The ``l1`` reconstruction loss: mean absolute error at native resolution.

Shapes: prediction and target are ``[B, 3, H, W]`` or lists of ``[3, H_i, W_i]``. Any
per-sample shape works, so the same loss serves video (``[B, 3, T, H, W]`` or a list of
``[3, T_i, H_i, W_i]``) and 3D views. The error is a mean per value within each sample, then a
mean over samples, so a large image weighs as much as a small one ("normalised per patch: mean,
not sum").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ModalityInputError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["L1Loss"]


def _samples(x: Any, who: str, what: str) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        if x.ndim < 2 or x.shape[0] == 0:
            raise ModalityInputError(f"{who}: {what} must be a non-empty batch [B, ...]")
        return list(x.unbind(0))
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, torch.Tensor) for v in x):
        return list(x)
    raise ModalityInputError(
        f"{who}: {what} must be a tensor [B, ...] or a non-empty list of tensors, "
        f"got {type(x).__name__}"
    )


class L1Loss(nn.Module):
    """Mean absolute error, averaged per sample then over samples.

    Images of different sizes come as lists; each pair must have one shape. Has no parameters.
    """

    name = "l1"
    inputs = "samples"  # what it consumes (docs/losses.md#inputs)

    def _error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.abs()

    def forward(self, prediction: Any, target: Any, context: Mapping[str, Any]) -> torch.Tensor:
        if isinstance(prediction, torch.Tensor) and isinstance(target, torch.Tensor):
            if prediction.shape != target.shape or prediction.ndim < 2 or not prediction.numel():
                raise ModalityInputError(
                    f"{self.name}: prediction {tuple(prediction.shape)} and target "
                    f"{tuple(target.shape)} must be one non-empty batch shape"
                )
            diff = self._error(prediction - target).flatten(1)  # [B, numel per sample]
            return diff.mean(dim=1).mean()
        preds = _samples(prediction, self.name, "prediction")
        targets = _samples(target, self.name, "target")
        if len(preds) != len(targets):
            raise ModalityInputError(
                f"{self.name}: {len(preds)} predictions but {len(targets)} targets"
            )
        per_sample = []
        for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
            if p.shape != t.shape or p.numel() == 0:
                raise ModalityInputError(
                    f"{self.name}: prediction[{i}] {tuple(p.shape)} and target[{i}] "
                    f"{tuple(t.shape)} "
                    "must have one non-empty shape"
                )
            per_sample.append(self._error(p - t).mean())
        return torch.stack(per_sample).mean()


@hookimpl
def register_losses(register) -> None:
    register("l1", L1Loss)
