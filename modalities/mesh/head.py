"""The ``gaussians`` head: decoder tokens -> K 3D Gaussians per voxel -> :class:`GaussianSet`.

Shapes: tokens [N, width] -> raw [N, 14 K] (see :mod:`.gaussians` for the block layout) ->
``to_samples`` -> one :class:`GaussianSet` of n_b * K Gaussians per sample, differentiable, in
the unit cube of the sample's voxel grid (``meta["resolution"]``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.core.latent import SparseLatent
from atoken.modalities.mesh.axes import latent_voxels
from atoken.modalities.mesh.gaussians import GaussianSet, activate, offset_perturbation

__all__ = ["GaussianHead"]


class GaussianHead(nn.Module):
    """A final LayerNorm (no affine, as the official Gaussian decoder) and a linear map to
    the raw parameters of ``gaussians_per_voxel`` Gaussians per token.

    Args:
        width: decoder width.
        gaussians_per_voxel: K (32 official; 4-8 for the CPU config).
        bias: whether the linear has a bias (the official one has).
    """

    #: The type of the samples :meth:`to_samples` returns (the contracts check it).
    sample_type = GaussianSet

    def __init__(self, *, width: int, gaussians_per_voxel: int = 32, bias: bool = True) -> None:
        super().__init__()
        k = gaussians_per_voxel
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or width < 1:
            raise ConfigError(
                f"gaussians: width and gaussians_per_voxel must be ints >= 1, got {width}, {k}"
            )
        self.width, self.gaussians_per_voxel = width, k
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.proj = nn.Linear(width, 14 * k, bias=bias)
        # Zero output, as TRELLIS' decoders: training starts from grey, 0.1-opaque Gaussians
        # of the initial scale at the Hammersley points of each voxel.
        nn.init.zeros_(self.proj.weight)
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)
        self.register_buffer("offset_perturbation", offset_perturbation(k), persistent=True)

    def forward(self, tokens: torch.Tensor, latent: SparseLatent | None = None) -> torch.Tensor:
        """tokens ``[N, width]`` -> raw parameters ``[N, 14 K]`` (each token on its own)."""
        return self.proj(self.norm(tokens))  # [N, 14 K]

    def to_samples(
        self, prediction: torch.Tensor, latent: SparseLatent, modality: Any
    ) -> list[GaussianSet]:
        """Raw ``[N, 14 K]`` -> one :class:`GaussianSet` per sample of ``latent``."""
        out = []
        start = 0
        voxels = latent_voxels(latent)  # [N, 3] (x, y, z)
        for b, n in enumerate(latent.seqlens.tolist()):
            coords = voxels[start : start + n]  # [n, 3]
            raw = prediction[start : start + n]
            out.append(
                activate(raw, coords, int(latent.meta[b]["resolution"]), self.offset_perturbation)
            )
            start += n
        return out
