"""Per-modality input projections for modalities that do not share the RGB pixel path.

The encoder's shared patch embedding reads ``patch_dim`` = pt * p * p * 3 RGB values per token
(3072 by default). Only a modality that asks for it (``Modality.shared_pixel_path``: image,
video and mesh, whose tokens are RGB patches) reads through it; every other modality gets its
own ``Linear(value_dim -> width)`` here, whatever its ``value_dim`` (a one-channel depth map
has p * p values; a 12-band image of 16 x 16 patches has 3072, and they are not RGB). Its
output side is its own instance of its head, built for its ``value_dim``
(``Tokenizer.heads[name]``).

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

    def add(self, name: str, value_dim: int, *, shared: bool | None = None) -> bool:
        """Declare a modality; returns True when it got its own projection (all but those
        that read through the ``shared`` patch embedding). The factory passes ``shared``
        (:func:`atoken.factory.shares_pixel_path`); a caller that does not say (None) gets
        the shared embedding when ``value_dim`` is ``patch_dim``, as before the switch.

        Raises:
            ConfigError: a value_dim below 1, a shared one that is not ``patch_dim``, or a
                second declaration with another value_dim.
        """
        if isinstance(value_dim, bool) or not isinstance(value_dim, int) or value_dim < 1:
            raise ConfigError(f"modality {name!r}: value_dim must be >= 1, got {value_dim!r}")
        if name in self.inputs:
            if self.inputs[name].in_features != value_dim:
                raise ConfigError(f"modality {name!r} was declared with another value_dim")
            return True
        if shared is None:
            shared = value_dim == self.patch_dim
        if shared:
            if value_dim != self.patch_dim:
                raise ConfigError(
                    f"modality {name!r}: the shared patch embedding reads {self.patch_dim} "
                    f"values per token, not {value_dim}"
                )
            return False
        self.inputs[name] = nn.Linear(value_dim, self.width, bias=self.bias)
        return True

    def has(self, name: str) -> bool:
        """Whether ``name`` has its own projection (else it uses the shared patch path)."""
        return name in self.inputs

    def embed(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """values ``[N, value_dim]`` -> tokens ``[N, width]``."""
        return self.inputs[name](values)
