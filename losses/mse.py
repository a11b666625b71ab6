"""The ``mse`` reconstruction loss: mean squared error at native resolution.

The same shapes and per-sample averaging as :mod:`atoken.losses.l1`; it optimises exactly what
PSNR measures (PSNR = 10 log10(1 / MSE) for images in [0, 1]).
"""

from __future__ import annotations

import torch

from atoken.losses.l1 import L1Loss
from atoken.plugins.hookspecs import hookimpl

__all__ = ["MSELoss"]


class MSELoss(L1Loss):
    """Mean squared error, averaged per sample then over samples. Has no parameters."""

    name = "mse"

    def _error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.square()


@hookimpl
def register_losses(register) -> None:
    register("mse", MSELoss)
