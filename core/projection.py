"""Per-modality input/output projections for modalities whose value size is not the patch's.

The backbone's shared patch embedding reads ``patch_dim`` = pt * p * p * 3 values per token
(3072 by default). A modality whose ``value_dim`` differs (a one-channel depth map has p * p)
gets its own ``Linear(value_dim -> width)`` in and ``Linear(width -> value_dim)`` out, so it
plugs in without padding its values to look like RGB.

Shapes: values [N, value_dim] -> tokens [N, width] -> values [N, value_dim].
"""

from __future__ import annotations

import torch
from torch import nn

from atoken.core.errors import ConfigError

__all__ = ["ModalityProjections"]


class ModalityProjections(nn.Module):
    """Own projections for the modalities that need them.

    Args:
        patch_dim: the value size the shared patch embedding reads.
        width: the backbone width.
    """

    def __init__(self, *, patch_dim: int, width: int) -> None:
        super().__init__()
        self.patch_dim, self.width = patch_dim, width
        self.inputs = nn.ModuleDict()
        self.outputs = nn.ModuleDict()

    def add(self, name: str, value_dim: int) -> bool:
        """Declare a modality; returns True when it got its own projections."""
        if value_dim < 1:
            raise ConfigError(f"modality {name!r}: value_dim must be >= 1, got {value_dim}")
        if value_dim == self.patch_dim:
            return False
        if name in self.inputs and self.inputs[name].in_features != value_dim:
            raise ConfigError(f"modality {name!r} was declared with another value_dim")
        if name not in self.inputs:
            self.inputs[name] = nn.Linear(value_dim, self.width)
            self.outputs[name] = nn.Linear(self.width, value_dim)
        return True

    def has(self, name: str) -> bool:
        """Whether ``name`` has its own projections (else it uses the shared patch path)."""
        return name in self.inputs

    def embed(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """values ``[N, value_dim]`` -> tokens ``[N, width]``."""
        return self.inputs[name](values)

    def unembed(self, name: str, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[N, width]`` -> values ``[N, value_dim]``."""
        return self.outputs[name](tokens)
