"""The ``occupancy`` modality: 3D occupancy grids as sparse b x b x b blocks (layout xyz).

Shapes:
    sample  [X, Y, Z] occupancy (bool, integer or float, values 0/1), each side >= 1
    grid    (gx, gy, gz) = ceil((X, Y, Z) / b) blocks; the sample is zero-padded up to it
    values  float32 [n, b**3], the voxels of one block laid out (bx, by, bz), 0/1
    coords  int32 [n, 4] = (0, x, y, z): the block index (t = 0)

Only the n non-empty blocks are tokens, so an empty grid has none; empty blocks come back as
zeros, which makes ``unpatchify(*patchify(x))`` exact.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import atoken
from atoken.core.coords import raster_coords, scatter_to_grid
from atoken.core.modality import check_positive_ints

__all__ = ["OccupancyModality"]


class OccupancyModality(atoken.Modality):
    """Occupancy grids ``[X, Y, Z]`` as their non-empty ``block``-sided cubes.

    Args:
        block: the side b of a block (a token holds b**3 voxels).
        max_tokens: the most non-empty blocks one sample may have.
    """

    name = "occupancy"
    layout = "xyz"
    sample_ndim = 3
    # The learned 2D position table is read at (row y, column x) of an image grid; voxels are
    # placed by RoPE over (t, x, y, z) alone.
    uses_pos_table = False
    default_head = "occupancy"
    value_mean = (0.5,)  # 0/1 -> -1/1
    value_std = (0.5,)

    def __init__(self, *, block: int = 4, max_tokens: int = 16384) -> None:
        check_positive_ints("occupancy", block=block, max_tokens=max_tokens)
        self.block = block
        self.max_tokens = max_tokens
        self.value_dim = block**3

    def _check(self, sample: Any) -> torch.Tensor:
        if not isinstance(sample, torch.Tensor):
            raise atoken.ModalityInputError(
                f"occupancy: expected a tensor, got {type(sample).__name__}"
            )
        if sample.ndim != 3 or min(sample.shape) < 1:
            raise atoken.ModalityInputError(
                f"occupancy: expected [X, Y, Z] with sides >= 1, got {tuple(sample.shape)}"
            )
        if sample.is_complex():
            raise atoken.ModalityInputError(f"occupancy: expected 0/1 values, got {sample.dtype}")
        if sample.is_floating_point() and bool(torch.isnan(sample).any()):
            raise atoken.ModalityInputError("occupancy: contains NaN")
        if sample.dtype != torch.bool and not bool(((sample == 0) | (sample == 1)).all()):
            raise atoken.ModalityInputError("occupancy: values must be 0 or 1")
        return sample.float()

    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        occ = self._check(sample)  # [X, Y, Z]
        X, Y, Z = occ.shape
        b = self.block
        gx, gy, gz = -(-X // b), -(-Y // b), -(-Z // b)
        occ = F.pad(occ, (0, gz * b - Z, 0, gy * b - Y, 0, gx * b - X))  # [gx*b, gy*b, gz*b]
        blocks = occ.reshape(gx, b, gy, b, gz, b).permute(0, 2, 4, 1, 3, 5)  # [gx, gy, gz, b, b, b]
        blocks = blocks.reshape(gx * gy * gz, b**3)  # [g, b**3], raster order of the grid
        keep = blocks.any(dim=1)  # [g]
        n = int(keep.sum())
        if n > self.max_tokens:
            raise atoken.TooManyTokensError(f"occupancy: {n} tokens > {self.max_tokens}")
        coords = raster_coords((gx, gy, gz), layout=self.layout, device=occ.device)  # [g, 4]
        meta = {"size": [X, Y, Z], "grid": [gx, gy, gz], "block": b}
        return blocks[keep], coords[keep], meta  # [n, b**3], [n, 4]

    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        gx, gy, gz = meta["grid"]
        return int(gx), int(gy), int(gz)

    def unpatchify(
        self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]
    ) -> torch.Tensor:
        X, Y, Z = meta["size"]
        gx, gy, gz = grid = self.grid_shape(meta)
        b = int(meta["block"])
        dense, _ = scatter_to_grid(values, coords, grid, layout=self.layout)  # [b**3, gx, gy, gz]
        occ = dense.reshape(b, b, b, gx, gy, gz).permute(3, 0, 4, 1, 5, 2)  # [gx, b, gy, b, gz, b]
        return occ.reshape(gx * b, gy * b, gz * b)[:X, :Y, :Z]  # [X, Y, Z]

    def examples(self, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        sparse = [(torch.rand(s, generator=g) < 0.1).float() for s in [(5, 6, 7), (8, 8, 8)]]
        return [*sparse, torch.zeros(3, 9, 2)]

    def invalid_examples(self) -> list[Any]:
        return [
            [[[0.0, 1.0]]],
            torch.zeros(4, 4),
            torch.zeros(2, 2, 2, 2),
            torch.zeros(0, 4, 4),
            torch.full((2, 2, 2), 0.5),
            torch.full((2, 2, 2), 2, dtype=torch.uint8),
            torch.full((2, 2, 2), float("nan")),
        ]
