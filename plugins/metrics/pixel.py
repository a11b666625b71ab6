"""The ``psnr`` and ``ssim`` metrics: per image with kornia, then averaged over images.

Shapes: prediction and target ``[B, 3, H, W]`` or lists of ``[3, H_i, W_i]`` in [0, 1]; each
pair must have one size. Scores are computed at native resolution in float32.

* PSNR = 10 log10(data_range² / MSE) per image (``inf`` for a perfect reconstruction, which
  makes the mean ``inf`` too).
* SSIM: kornia's Gaussian-window SSIM (window 11, σ 1.5, same padding), its map averaged per
  image.
"""

from __future__ import annotations

import torch

from atoken.core.errors import ConfigError
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.metrics.base import PerImageMetric

__all__ = ["PSNR", "SSIM"]


def _positive(value: float, name: str, who: str) -> float:
    if not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{who}: {name} must be a positive number, got {value!r}")
    return float(value)


class PSNR(PerImageMetric):
    """Peak signal-to-noise ratio in dB, averaged over images.

    Args:
        data_range: the value range of the images (1.0 for [0, 1]).
    """

    name = "psnr"
    accepts = ("picture",)

    def __init__(self, *, data_range: float = 1.0) -> None:
        self.data_range = _positive(data_range, "data_range", "psnr")
        super().__init__()

    def score(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import kornia

        return torch.stack(
            [
                kornia.metrics.psnr(p, t, self.data_range)
                for p, t in zip(prediction, target, strict=True)
            ]
        )  # [B]


class SSIM(PerImageMetric):
    """Structural similarity, averaged over pixels of each image, then over images.

    Args:
        data_range: the value range of the images (1.0 for [0, 1]).
        window_size: the side of the Gaussian window (odd), 11.
    """

    name = "ssim"
    accepts = ("picture",)

    def __init__(self, *, data_range: float = 1.0, window_size: int = 11) -> None:
        self.data_range = _positive(data_range, "data_range", "ssim")
        if not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
            raise ConfigError(f"ssim: window_size must be a positive odd int, got {window_size!r}")
        self.window_size = window_size
        super().__init__()

    def score(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import kornia

        ssim_map = kornia.metrics.ssim(
            prediction, target, self.window_size, max_val=self.data_range
        )  # [B, 3, H, W]
        return ssim_map.flatten(1).mean(dim=1)  # [B]


@hookimpl
def register_metrics(register) -> None:
    register("psnr", PSNR)
    register("ssim", SSIM)
