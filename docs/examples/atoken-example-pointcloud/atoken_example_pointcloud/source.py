"""The ``synthetic_clouds`` data source: coloured point clouds of four shapes (sphere, cube,
torus, helix), each randomly rotated and scaled, coloured by position.

Shapes: a cloud float32 [points, 6] (xyz in [-1, 1], rgb in [0, 1]). A batch is a function of
``(seed, step, micro)`` only; the held-out clouds come from their own seed.
"""

from __future__ import annotations

import math

import attrs
import torch

import atoken
from atoken.data.sources import SourceContext


def shape_cloud(kind: int, points: int, g: torch.Generator) -> torch.Tensor:
    """One cloud ``[points, 6]`` of shape ``kind`` (0 sphere, 1 cube, 2 torus, 3 helix)."""
    u, v = torch.rand(2, points, generator=g) * 2 * math.pi  # [points] each
    if kind == 0:
        z = torch.rand(points, generator=g) * 2 - 1
        r = (1 - z**2).sqrt()
        xyz = torch.stack([r * u.cos(), r * u.sin(), z], 1)
    elif kind == 1:
        xyz = torch.rand(points, 3, generator=g) * 2 - 1
        face = torch.randint(3, (points,), generator=g)
        xyz[torch.arange(points), face] = xyz[torch.arange(points), face].sign()
    elif kind == 2:
        xyz = (
            torch.stack(
                [(1 + 0.4 * v.cos()) * u.cos(), (1 + 0.4 * v.cos()) * u.sin(), 0.4 * v.sin()], 1
            )
            / 1.4
        )
    else:
        t = torch.rand(points, generator=g) * 2 - 1
        xyz = torch.stack([0.6 * (3 * t).cos(), 0.6 * (3 * t).sin(), t], 1)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))  # a random rotation
    xyz = xyz @ q.T * (0.5 + 0.4 * torch.rand((), generator=g))
    return torch.cat([xyz.clamp(-1, 1), (xyz + 1) / 2], 1)  # [points, 6]


@attrs.define(kw_only=True, slots=False)
class SyntheticClouds:
    """``synthetic_clouds``: ``batch_size`` clouds of ``points`` points per batch; ``heldout``
    clouds to evaluate on."""

    context: SourceContext = attrs.field(factory=SourceContext)
    batch_size: int = 8
    points: int = 256
    heldout_count: int = attrs.field(default=8, alias="heldout")
    modality: str = "pointcloud"

    def __attrs_post_init__(self) -> None:
        g = torch.Generator().manual_seed(10_000 + self.context.seed)
        self.heldout = [shape_cloud(i % 4, self.points, g) for i in range(self.heldout_count)]
        self.heldout_names = tuple(f"cloud{i}" for i in range(self.heldout_count))

    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        seed = ((self.context.seed * 7919 + step) * 131 + micro) * 64 + self.context.rank
        g = torch.Generator().manual_seed(seed)
        kinds = torch.randint(4, (self.batch_size,), generator=g).tolist()
        return [shape_cloud(k, self.points, g) for k in kinds]


@atoken.hookimpl
def register_data_sources(register) -> None:
    register("synthetic_clouds", SyntheticClouds)
