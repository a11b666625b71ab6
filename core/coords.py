"""Raster coordinates and scatter/gather between sparse token sets and dense grids.

Two grid layouts name how a dense grid's axes map onto the 4D coordinate (t, x, y, z):

    "thw": a grid of shape (T, H, W) (video; images have T = 1) -> coords (t, x=w, y=h, z=0)
    "xyz": a grid of shape (X, Y, Z) (3D voxels)                -> coords (t=0, x, y, z)

Raster order is row-major over the grid shape: for "thw" t varies slowest, then the row y,
then the column x, which is the order ``tensor.reshape(T * H * W)`` visits a [T, H, W] grid.

Shapes: feats [n, C], coords int32 [n, 4], grid [C, *shape], occupancy bool [*shape].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from atoken.core.errors import CoordinateError

__all__ = [
    "LAYOUTS",
    "gather_from_grid",
    "grid_index",
    "raster_coords",
    "scatter_to_grid",
    "time_window",
]

# layout -> which coordinate column each grid axis is read from
LAYOUTS: dict[str, tuple[int, int, int]] = {"thw": (0, 2, 1), "xyz": (1, 2, 3)}


def _layout_axes(layout: str) -> tuple[int, int, int]:
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise CoordinateError(
            f"unknown layout {layout!r}; expected one of {sorted(LAYOUTS)}"
        ) from None


_INT64_MAX = 2**63 - 1


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or any(s < 0 for s in dims):
        raise CoordinateError(f"grid shape must be 3 non-negative ints, got {tuple(shape)}")
    return dims  # type: ignore[return-value]


def raster_coords(
    shape: Sequence[int], *, layout: str = "thw", device: torch.device | str | None = None
) -> torch.Tensor:
    """All coordinates of a dense grid in raster order: int32 ``[prod(shape), 4]``."""
    dims = _check_shape(shape)
    axes = _layout_axes(layout)
    mesh = torch.meshgrid(*(torch.arange(s, device=device) for s in dims), indexing="ij")
    coords = torch.zeros(*dims, 4, dtype=torch.int32, device=device)  # [d0, d1, d2, 4]
    for grid_axis, column in enumerate(axes):
        coords[..., column] = mesh[grid_axis].to(torch.int32)
    return coords.reshape(-1, 4)  # [prod(shape), 4]


def grid_index(coords: torch.Tensor, shape: Sequence[int], *, layout: str = "thw") -> torch.Tensor:
    """The raster (flat) index of each coordinate in a grid: int64 ``[n]``.

    Raises:
        CoordinateError: when a coordinate lies outside the grid, a column that the layout
            does not use is non-zero, or the grid has more cells than int64 indexes (an index
            would wrap, silently wrong).
    """
    dims = _check_shape(shape)
    if math.prod(dims) > _INT64_MAX + 1:
        raise CoordinateError(
            f"grid {dims} has {math.prod(dims)} cells, more than an int64 index can number "
            f"({_INT64_MAX + 1})"
        )
    axes = _layout_axes(layout)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise CoordinateError(f"coords must have shape [n, 4], got {tuple(coords.shape)}")
    c = coords.long()
    unused = [col for col in range(4) if col not in axes]
    if c.numel() and bool((c[:, unused] != 0).any()):
        raise CoordinateError(f"layout {layout!r} needs coordinate column(s) {unused} to be 0")
    flat = torch.zeros(c.shape[0], dtype=torch.long, device=c.device)
    for grid_axis, column in enumerate(axes):
        v = c[:, column]
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= dims[grid_axis]):
            raise CoordinateError(
                f"coordinate column {column} outside [0, {dims[grid_axis]}) of grid {dims}"
            )
        flat = flat * dims[grid_axis] + v
    return flat


def scatter_to_grid(
    feats: torch.Tensor,
    coords: torch.Tensor,
    shape: Sequence[int],
    *,
    layout: str = "thw",
    fill: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place sparse feats into a dense grid.

    Returns:
        ``(grid [C, *shape], occupancy bool [*shape])``; empty cells hold ``fill``.
    """
    n, C = feats.shape
    if coords.shape[0] != n:
        raise CoordinateError(f"{n} feats but {coords.shape[0]} coords")
    dims = _check_shape(shape)
    flat = grid_index(coords, dims, layout=layout)  # [n]
    total = dims[0] * dims[1] * dims[2]
    grid = feats.new_full((total, C), fill)  # [prod(shape), C]
    grid[flat] = feats
    occupancy = torch.zeros(total, dtype=torch.bool, device=feats.device)
    occupancy[flat] = True
    grid = grid.T.reshape(C, *dims)  # [C, *shape]
    return grid, occupancy.reshape(dims)


def gather_from_grid(
    grid: torch.Tensor, coords: torch.Tensor, *, layout: str = "thw"
) -> torch.Tensor:
    """Read a dense grid ``[C, *shape]`` at sparse coordinates: feats ``[n, C]``."""
    if grid.ndim != 4:
        raise CoordinateError(f"grid must have shape [C, d0, d1, d2], got {tuple(grid.shape)}")
    C = grid.shape[0]
    flat = grid_index(coords, grid.shape[1:], layout=layout)  # [n]
    return grid.reshape(C, -1)[:, flat].T  # [n, C]


def time_window(coords: torch.Tensor, start: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of a time window: ``(rows [n], coords [n, 4])`` of the tokens with
    ``start <= t < start + steps``, their time re-based to start at 0 (a temporal tile)."""
    t = coords[:, 0]
    rows = torch.nonzero((t >= start) & (t < start + steps)).flatten()  # [n], may be 0
    local = coords[rows].clone()  # [n, 4]
    local[:, 0] -= start
    return rows, local
