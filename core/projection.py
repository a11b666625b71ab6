"""Per-modality input projections for modalities whose value size is not the patch's.

The encoder's shared patch embedding reads ``patch_dim`` = pt * p * p * 3 values per token
(3072 by default). A modality whose ``value_dim`` differs (a one-channel depth map has p * p)
gets its own ``Linear(value_dim -> width)`` here instead, so it plugs in without padding its
values to look like RGB. Its output side is its own instance of its head, built for its
``value_dim`` (``Tokenizer.heads[name]``).

Shapes: values [N, value_dim] -> tokens [N, width].
"""

from __future__ import annotations

import torch
from torch import nn

from atoken.core.errors import ConfigError

__all__ = ["ModalityProjections"]


class ModalityProjections(nn.Module):
    """Own input projections for the modalities that need them (``inputs[name]``).

    Args:
        patch_dim: the value size the shared patch embedding reads.
        width: the encoder width.
        bias: a bias on each projection (the encoder's ``bias``).
    """

    def __init__(self, *, patch_dim: int, width: int, bias: bool = True) -> None:
        super().__init__()
        self.patch_dim, self.width, self.bias = patch_dim, width, bias
        self.inputs = nn.ModuleDict()

    def add(self, name: str, value_dim: int) -> bool:
        """Declare a modality; returns True when it got its own projection.

        Raises:
            ConfigError: a value_dim below 1, or a second declaration with another value_dim.
        """
        if isinstance(value_dim, bool) or not isinstance(value_dim, int) or value_dim < 1:
            raise ConfigError(f"modality {name!r}: value_dim must be >= 1, got {value_dim!r}")
        if name in self.inputs:
            if self.inputs[name].in_features != value_dim:
                raise ConfigError(f"modality {name!r} was declared with another value_dim")
            return True
        if value_dim == self.patch_dim:
            return False
        self.inputs[name] = nn.Linear(value_dim, self.width, bias=self.bias)
        return True

    def has(self, name: str) -> bool:
        """Whether ``name`` has its own projection (else it uses the shared patch path)."""
        return name in self.inputs

    def embed(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """values ``[N, value_dim]`` -> tokens ``[N, width]``."""
        return self.inputs[name](values)
