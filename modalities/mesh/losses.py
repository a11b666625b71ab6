"""Regularisers of decoded Gaussians (optional loss components of the 3D task).

Both consume ``inputs = "gaussians"``: a list of :class:`~.gaussians.GaussianSet`, one per
sample (the 3D task provides it), and average per sample, then over the samples.

* ``gaussian_opacity``: the mean opacity (pushes unneeded Gaussians to transparency);
* ``gaussian_volume``: the mean product of the three scales over the cube of the voxel side
  (1 / resolution, passed as ``resolution``), which discourages needle- or blob-like
  Gaussians far larger than a voxel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.modalities.mesh.gaussians import GaussianSet

__all__ = ["GaussianOpacityLoss", "GaussianVolumeLoss"]


def _sets(prediction: Any) -> Sequence[GaussianSet]:
    if not isinstance(prediction, Sequence) or not all(
        isinstance(g, GaussianSet) for g in prediction
    ):
        raise ConfigError("gaussian losses take a list of GaussianSet (inputs = 'gaussians')")
    return prediction


def _example_inputs() -> tuple[list[GaussianSet], None, dict[str, torch.Tensor]]:
    """Two random sets; their scales and opacities are the differentiable leaves (passed in
    the context too, where the loss contract looks for them)."""
    g = torch.Generator().manual_seed(0)
    scales = (torch.rand(2, 6, 3, generator=g) * 0.02 + 0.005).requires_grad_()
    opacities = torch.rand(2, 6, generator=g).requires_grad_()
    sets = [
        GaussianSet(
            means=torch.rand(6, 3, generator=g) - 0.5,
            scales=scales[i],
            quats=torch.tensor([1.0, 0, 0, 0]).expand(6, 4),
            opacities=opacities[i],
            sh0=torch.zeros(6, 3),
        )
        for i in range(2)
    ]
    return sets, None, {"scales": scales, "opacities": opacities}


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(values).mean() if values else torch.zeros(())


class GaussianOpacityLoss(nn.Module):
    inputs = "gaussians"
    example_inputs = staticmethod(_example_inputs)

    def forward(self, prediction: Any, target: Any, context: Mapping[str, Any]) -> torch.Tensor:
        return _mean([g.opacities.mean() for g in _sets(prediction) if len(g)])


class GaussianVolumeLoss(nn.Module):
    inputs = "gaussians"
    example_inputs = staticmethod(_example_inputs)

    def __init__(self, *, resolution: int = 64) -> None:
        super().__init__()
        if not isinstance(resolution, int) or resolution < 1:
            raise ConfigError(f"gaussian_volume: resolution must be an int >= 1, got {resolution}")
        self.resolution = resolution

    def forward(self, prediction: Any, target: Any, context: Mapping[str, Any]) -> torch.Tensor:
        voxel = (1.0 / self.resolution) ** 3
        return _mean([g.scales.prod(-1).mean() / voxel for g in _sets(prediction) if len(g)])
