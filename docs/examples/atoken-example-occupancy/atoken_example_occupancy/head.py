"""The ``occupancy`` head: decoder tokens -> per-voxel occupancy logits -> probability grids.

Shapes: tokens [N, width] -> logits [N, value_dim] (value_dim = b**3 voxels of a block) ->
sigmoid -> probabilities [N, value_dim] -> the modality's ``unpatchify`` per sample: float
grids [X, Y, Z] in [0, 1], differentiable, which a loss such as ``occupancy_bce`` compares
with the target grids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import atoken
from atoken.core.errors import ConfigError

__all__ = ["OccupancyHead"]


class OccupancyHead(nn.Module):
    """A linear map from the decoder width to one occupancy logit per voxel of a block.

    Args:
        width: decoder width.
        value_dim: voxels per token (b**3).
        bias: whether the linear has a bias.
    """

    def __init__(self, *, width: int, value_dim: int, bias: bool = True) -> None:
        super().__init__()
        if width < 1 or value_dim < 1:
            raise ConfigError(
                f"occupancy head: width and value_dim must be >= 1, got {width}, {value_dim}"
            )
        self.width, self.value_dim = width, value_dim
        self.proj = nn.Linear(width, value_dim, bias=bias)
        # Zero-initialised: training starts from probability 0.5 everywhere, not from noise.
        nn.init.zeros_(self.proj.weight)
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)

    def forward(
        self, tokens: torch.Tensor, latent: atoken.SparseLatent | None = None
    ) -> torch.Tensor:
        """tokens ``[N, width]`` -> logits ``[N, value_dim]`` (each token on its own)."""
        return self.proj(tokens)  # [N, value_dim]

    def to_samples(
        self, prediction: torch.Tensor, latent: atoken.SparseLatent, modality: atoken.Modality
    ) -> list[Any]:
        """Logits ``[N, value_dim]`` -> one probability grid ``[X, Y, Z]`` per sample (blocks
        without a token are 0: they were empty in the input)."""
        probs = torch.sigmoid(prediction.float())  # [N, value_dim]
        return modality.unpack(latent.replace(feats=probs))
