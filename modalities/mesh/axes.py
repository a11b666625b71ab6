"""Which voxel axis each coordinate column of a mesh sample holds.

A mesh sample's tokens sit at coords ``(t = 0, a, b, c)``, a permutation of the voxel index
``(x, y, z)`` recorded in the sample's ``meta["axes"]``:

* ``"xyz"`` (atoken's packing, the default when ``meta`` has no ``"axes"``): ``(0, x, y, z)``.
* ``"yxz"`` (the official packing): ``(0, y, x, z)``. atoken reads ``coords[:, 1]`` as a
  column and ``coords[:, 2]`` as a row (the 2D position table, the converted RoPE order
  (0, 2, 1, 3)), while the official model reads voxel x as its row: the swap makes a converted
  tokenizer see a voxel where the official one does.

Heads that place Gaussians in the voxel grid read the voxel index back with
:func:`latent_voxels`; :meth:`~.modality.MeshModality.unpatchify` with :func:`voxel_xyz`. The
modality's ``layout`` stays ``"xyz"`` (an R^3 grid, the same for either order): a grid
scattered from a ``"yxz"`` sample's coords is indexed (y, x, z).

Shapes: coords ``int [n, 3]`` (the columns 1..3 of a sample's coords), latent coords
``int32 [N, 4]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from atoken.core.errors import ModalityInputError

__all__ = ["AXES", "AXES_KEY", "latent_voxels", "sample_axes", "to_columns", "voxel_xyz"]

#: The ``meta`` key of a sample's axes.
AXES_KEY = "axes"
#: The axes a packing may write (see the module docstring).
AXES = ("xyz", "yxz")


def _order(axes: str) -> list[int]:
    """The voxel axis (0 = x, 1 = y, 2 = z) each coordinate column holds."""
    if axes not in AXES:
        raise ModalityInputError(f"mesh: meta['axes'] must be one of {AXES}, got {axes!r}")
    return ["xyz".index(a) for a in axes]


def sample_axes(meta: Any) -> str:
    """A sample's axes from its ``meta`` (``"xyz"`` when it records none)."""
    axes = meta.get(AXES_KEY, "xyz") if isinstance(meta, Mapping) else "xyz"
    _order(axes)
    return axes


def to_columns(xyz: torch.Tensor, axes: str) -> torch.Tensor:
    """Voxel indices ``[n, 3] (x, y, z)`` -> the coordinate columns ``[n, 3]`` of ``axes``."""
    return xyz[:, _order(axes)]


def voxel_xyz(columns: torch.Tensor, axes: str) -> torch.Tensor:
    """Coordinate columns ``[n, 3]`` written in ``axes`` -> voxel indices ``[n, 3] (x, y, z)``
    (the inverse permutation of :func:`to_columns`)."""
    order = _order(axes)
    return columns[:, [order.index(axis) for axis in range(3)]]


def latent_voxels(latent: Any) -> torch.Tensor:
    """Every token's voxel index ``[N, 3] (x, y, z)`` of a mesh latent (``coords [N, 4]``,
    ``seqlens [B]``, ``meta``), each sample read in its own axes."""
    columns = latent.coords[:, 1:]  # [N, 3]
    axes = [sample_axes(m) for m in latent.meta]
    if all(a == "xyz" for a in axes):
        return columns
    out = columns.clone()
    start = 0
    for a, n in zip(axes, latent.seqlens.tolist(), strict=True):
        out[start : start + n] = voxel_xyz(columns[start : start + n], a)  # [n, 3]
        start += n
    return out
