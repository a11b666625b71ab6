"""Metrics of set-valued samples (points, Gaussians): ``chamfer`` and ``emd``, the mean over
the held-out samples of :func:`atoken.losses.sets.chamfer_distance` and of
:func:`atoken.losses.sets.matched_distance` (the exact earth mover's distance of equal-size
sets). Shapes: each sample a set ``[n, d]``; a reconstruction may hold another number of rows.
"""

from __future__ import annotations

from typing import Any

import torch

from atoken.core.errors import ConfigError
from atoken.losses.sets import chamfer_distance, matched_distance, set_pairs
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.metrics.base import ImageMetric

__all__ = ["Chamfer", "MatchedDistance", "SetDistance"]


class SetDistance(ImageMetric):
    """The mean of :meth:`distance` over (reconstruction, original) set pairs.

    Args:
        dims: compare the first ``dims`` values of each row only (0: all).
    """

    accepts = ("set",)

    def __init__(self, *, dims: int = 0) -> None:
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 0:
            raise ConfigError(f"{self.name}: dims must be an int >= 0, got {dims!r}")
        self.dims = dims
        self.reset()

    def distance(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        """The distance of one pair of sets ``[n, d]``, ``[m, d]``."""
        raise NotImplementedError

    def reset(self) -> None:
        self.values: list[float] = []

    @torch.no_grad()
    def update(self, prediction: Any, target: Any) -> None:
        for p, t in set_pairs(prediction, target, self.name):
            self.values.append(float(self.distance(p, t)))

    def compute(self) -> dict[str, float]:
        if not self.values:
            raise ConfigError(f"{self.name}: no sets yet; call update() before compute()")
        return {self.name: sum(self.values) / len(self.values)}


class Chamfer(SetDistance):
    """``chamfer``: the symmetric Chamfer distance (squared, :func:`chamfer_distance`)."""

    name = "chamfer"

    def distance(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        return float(chamfer_distance(prediction, target, dims=self.dims))


class MatchedDistance(SetDistance):
    """``emd``: the mean distance of the best one-to-one matching (:func:`matched_distance`)."""

    name = "emd"

    def distance(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        return matched_distance(prediction, target, dims=self.dims)


@hookimpl
def register_metrics(register) -> None:
    register("chamfer", Chamfer)
    register("emd", MatchedDistance)
