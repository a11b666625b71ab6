"""Distances between sets of rows, for set-valued modalities (points, Gaussians): the
``chamfer`` loss and the functions the ``chamfer`` and ``emd`` metrics use.

Shapes: a set is ``[n, d]`` (n rows in no order, d values each: ``xyz``, ``xyz + rgb``, a
Gaussian's parameters), or an object whose ``set_rows()`` gives one (the 3D family's
``GaussianSet``: means and colours, ``[G, 6]``); a prediction may hold another number of rows
than its target (``Modality.set_valued``). A batch is a list of such sets.

    chamfer_distance(p [n, d], t [m, d])
        = mean_i min_j |p_i - t_j|^2 + mean_j min_i |p_i - t_j|^2
    matched_distance(p [n, d], t [n, d])
        = min over one-to-one matchings pi of mean_i |p_i - t_pi(i)|

``matched_distance`` is the earth mover's distance of two equal-size sets with uniform weights,
solved exactly by ``scipy.optimize.linear_sum_assignment``; sets of different sizes are first
subsampled to the smaller size (evenly, deterministically). ``dims`` restricts either distance
to the first ``dims`` values of each row (e.g. 3: positions only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ModalityInputError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["ChamferLoss", "chamfer_distance", "matched_distance", "set_pairs"]

#: Rows of the prediction compared against the target at once (bounds the [rows, m] matrix).
_CHUNK = 4096


def _as_set(x: Any, who: str, dims: int) -> torch.Tensor:
    rows = getattr(x, "set_rows", None)
    if callable(rows):  # an object that is a set (the 3D family's GaussianSet)
        x = rows()
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ModalityInputError(f"{who}: a set is a non-empty [n, d] tensor, got {shape}")
    if dims and x.shape[1] < dims:
        raise ModalityInputError(f"{who}: dims={dims} but the set has {x.shape[1]} values a row")
    return x[:, :dims] if dims else x


def _nearest(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``min_j |a_i - b_j|^2`` for each row of ``a`` ``[n]``, ``_CHUNK`` rows at a time."""
    return torch.cat([torch.cdist(a[i : i + _CHUNK], b).amin(1) for i in range(0, len(a), _CHUNK)])


def chamfer_distance(prediction: Any, target: Any, *, dims: int = 0) -> torch.Tensor:
    """The symmetric Chamfer distance of two sets (see the module docstring), a scalar that
    carries gradients to both.

    Raises:
        ModalityInputError: not two non-empty ``[n, d]`` tensors of one width.
    """
    p = _as_set(prediction, "chamfer", dims)
    t = _as_set(target, "chamfer", dims)
    if p.shape[1] != t.shape[1]:
        raise ModalityInputError(f"chamfer: rows of {p.shape[1]} and {t.shape[1]} values")
    p, t = p.float(), t.float()
    return _nearest(p, t).pow(2).mean() + _nearest(t, p).pow(2).mean()


def _even(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of ``x`` picked evenly (all of them when it has ``n``)."""
    index = torch.linspace(0, len(x) - 1, n).round().long()  # [n]
    return x[index]


@torch.no_grad()
def matched_distance(prediction: Any, target: Any, *, dims: int = 0) -> float:
    """The mean distance of the best one-to-one matching of two sets (the earth mover's
    distance of equal-size sets; see the module docstring).

    Raises:
        ModalityInputError: not two non-empty ``[n, d]`` tensors of one width.
    """
    from scipy.optimize import linear_sum_assignment

    p = _as_set(prediction, "emd", dims).detach().float().cpu()
    t = _as_set(target, "emd", dims).detach().float().cpu()
    if p.shape[1] != t.shape[1]:
        raise ModalityInputError(f"emd: rows of {p.shape[1]} and {t.shape[1]} values")
    n = min(len(p), len(t))
    cost = torch.cdist(_even(p, n), _even(t, n))  # [n, n]
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost[rows, cols].mean())


def set_pairs(prediction: Any, target: Any, who: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(prediction, target)`` sets of two batches (lists of ``[n_i, d]``, or one set each).

    Raises:
        ModalityInputError: batches of different lengths, or not sets.
    """
    preds = [prediction] if isinstance(prediction, torch.Tensor) else list(prediction)
    targets = [target] if isinstance(target, torch.Tensor) else list(target)
    if len(preds) != len(targets) or not preds:
        raise ModalityInputError(
            f"{who}: {len(preds)} predicted and {len(targets)} target sets (must be equal, > 0)"
        )
    return list(zip(preds, targets, strict=True))


class ChamferLoss(nn.Module):
    """``chamfer``: the mean over a batch's samples of :func:`chamfer_distance` (decoded set
    against its input set), for any set-valued modality.

    Args:
        dims: compare the first ``dims`` values of each row only (0: all).
    """

    name = "chamfer"
    inputs = "samples"  # what it consumes (docs/losses.md#inputs)

    def __init__(self, *, dims: int = 0) -> None:
        super().__init__()
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 0:
            raise ModalityInputError(f"chamfer: dims must be an int >= 0, got {dims!r}")
        self.dims = dims

    def forward(self, prediction: Any, target: Any, context: Mapping[str, Any]) -> torch.Tensor:
        pairs = set_pairs(prediction, target, self.name)
        return torch.stack([chamfer_distance(p, t, dims=self.dims) for p, t in pairs]).mean()

    def example_inputs(self) -> tuple[list[torch.Tensor], list[torch.Tensor], dict]:
        """(prediction, target, context) for the loss contract: sets of different sizes."""
        g = torch.Generator().manual_seed(0)
        prediction = [torch.rand(7, 3, generator=g, requires_grad=True), torch.rand(5, 3)]
        return prediction, [torch.rand(9, 3, generator=g), torch.rand(5, 3, generator=g)], {}


@hookimpl
def register_losses(register) -> None:
    register("chamfer", ChamferLoss)
