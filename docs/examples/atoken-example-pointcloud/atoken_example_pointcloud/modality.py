"""The ``pointcloud`` modality: a set of coloured points as sparse voxel tokens.

Shapes:
    sample  float32 [n, 6]: (x, y, z) in [-1, 1], (r, g, b) in [0, 1]; rows in no order
    values  float32 [v, K * 6]: the K points of an occupied voxel of an R^3 grid, each as its
            offset from the voxel's centre in voxel units ([-0.5, 0.5]) and its colour; a voxel
            with fewer than K points repeats them, one with more keeps its first K
    coords  int32 [v, 4] = (0, x, y, z), the voxel
    decoded [n', 6]: every predicted point, repeats (the padding) dropped: a set of any size
            (``set_valued``), compared as a set (chamfer, emd)
"""

from __future__ import annotations

from typing import Any

import torch

import atoken
from atoken.core.errors import ModalityInputError


class PointCloudModality(atoken.Modality):
    """Coloured point clouds in the cube [-1, 1]^3.

    Args:
        resolution: the voxel grid side R.
        points_per_voxel: K, the points one token holds.
    """

    name = "pointcloud"
    layout = "xyz"
    sample_ndim = 2
    uses_pos_table = False  # voxels are placed by the 4D RoPE alone
    set_valued = True
    sample_kind = "set"

    def __init__(self, *, resolution: int = 8, points_per_voxel: int = 4) -> None:
        if resolution < 1 or points_per_voxel < 1:
            raise ModalityInputError("pointcloud: resolution and points_per_voxel must be >= 1")
        self.R, self.K = resolution, points_per_voxel
        self.value_dim = points_per_voxel * 6

    def _centres(self, voxels: torch.Tensor) -> torch.Tensor:
        return (voxels.float() + 0.5) * (2 / self.R) - 1  # [v, 3]

    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        if not isinstance(sample, torch.Tensor) or sample.ndim != 2 or sample.shape[1] != 6:
            shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample)
            raise ModalityInputError(f"pointcloud: a sample is a [n, 6] tensor, got {shape}")
        x = sample.float()
        if not len(x) or not bool(torch.isfinite(x).all()) or x[:, :3].abs().max() > 1:
            raise ModalityInputError("pointcloud: needs points, finite, xyz within [-1, 1]")
        cell = ((x[:, :3] + 1) * (self.R / 2)).floor().clamp(0, self.R - 1).long()  # [n, 3]
        voxels, owner = torch.unique(cell, dim=0, return_inverse=True)  # [v, 3], [n]
        order = torch.argsort(owner, stable=True)  # the points, voxel by voxel
        counts = torch.bincount(owner, minlength=len(voxels))  # [v]
        starts = torch.cumsum(counts, 0) - counts  # [v]
        slot = torch.arange(self.K)[None] % counts[:, None]  # [v, K]: repeats when fewer
        picked = x[order[starts[:, None] + slot]]  # [v, K, 6]
        offsets = (picked[..., :3] - self._centres(voxels)[:, None]) * (self.R / 2)  # [v, K, 3]
        values = torch.cat([offsets, picked[..., 3:]], -1).reshape(len(voxels), self.value_dim)
        coords = torch.cat([torch.zeros(len(voxels), 1, dtype=torch.long), voxels], 1)
        return values, coords.int(), {"points": len(x)}

    def unpatchify(self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]) -> Any:
        v = values.reshape(len(values), self.K, 6)  # [v, K, 6]
        xyz = self._centres(coords[:, 1:])[:, None] + v[..., :3] * (2 / self.R)  # [v, K, 3]
        points = torch.cat([xyz, v[..., 3:]], -1).reshape(-1, 6)  # [v * K, 6]
        _, group = torch.unique(points.detach(), dim=0, return_inverse=True)  # repeats: one
        first = torch.full((int(group.max()) + 1 if len(group) else 0,), len(points))
        first = first.scatter_reduce(0, group, torch.arange(len(points)), "amin")
        return points[first.sort().values]  # [n', 6], gradients kept

    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        return (self.R, self.R, self.R)

    def examples(self, seed: int) -> list[Any]:
        from atoken_example_pointcloud.source import shape_cloud

        g = torch.Generator().manual_seed(seed)
        clouds = [shape_cloud(int(torch.randint(4, (), generator=g)), 48, g) for _ in range(2)]
        clouds = [(c * 64).round() / 64 for c in clouds]  # on a 1/64 grid: exact arithmetic
        return [self.unpatchify(*self.patchify(c)) for c in clouds]  # <= K points a voxel

    def invalid_examples(self) -> list[Any]:
        return [torch.zeros(5, 3), torch.zeros(0, 6), torch.full((4, 6), 2.0), "cloud.ply"]

    def draw(self, sample: Any, reference: Any = None) -> torch.Tensor | None:
        """The points seen from above (x right, y down), nearer (larger z) drawn last, 96 px."""
        if not isinstance(sample, torch.Tensor) or sample.ndim != 2 or sample.shape[1] != 6:
            return None
        p = sample.detach().float().cpu()[torch.argsort(sample[:, 2].detach().cpu())]
        pixel = ((p[:, :2].clamp(-1, 1) + 1) * 47.5).round().long()  # [n, 2] in [0, 95]
        picture = torch.zeros(3, 96, 96)
        picture[:, pixel[:, 1], pixel[:, 0]] = p[:, 3:].clamp(0, 1).T
        return picture


@atoken.hookimpl
def register_modalities(register) -> None:
    register("pointcloud", PointCloudModality)
