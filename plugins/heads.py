"""Built-in decoder heads: ``pixels`` maps decoder tokens to patch values of a modality.

Shapes: tokens [N, width] -> values [N, value_dim] -> the modality's ``denormalize`` and
``unpatchify`` per sample (images [3, H, W], clips [3, T, H, W], depth maps [H, W]).

The head protocol (documented in ``docs/plugin_hooks.md``): the factory is called as
``factory(width=..., value_dim=..., bias=..., modality=..., **head_params)`` (each of the first
four only when it accepts it), and ``forward(tokens [N, width], latent)`` returns the prediction
for the tokens of ``latent`` (a :class:`SparseLatent` of those samples' latent codes). A head
whose prediction is the modality's (normalised) token values needs nothing more; any other head
also defines ``to_samples(prediction, latent, modality) -> list`` of decoded samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import ConfigError
from atoken.core.latent import SparseLatent
from atoken.plugins.hookspecs import hookimpl

__all__ = ["PixelHead"]


class PixelHead(nn.Module):
    """Final norm and a linear map from the decoder width to patch values.

    Args:
        width: decoder width.
        value_dim: values per token (``pt * p * p * 3`` = 3072 by default).
        bias: whether the output linear has a bias (the official decoder has none).
    """

    def __init__(self, *, width: int, value_dim: int = 3072, bias: bool = True) -> None:
        super().__init__()
        if width < 1 or value_dim < 1:
            raise ConfigError(f"pixels: width and value_dim must be >= 1, got {width}, {value_dim}")
        self.width, self.value_dim = width, value_dim
        self.proj = nn.Linear(width, value_dim, bias=bias)
        # Zero-initialised output (as TRELLIS' decoders): training starts from the mean value
        # (mid-grey for images) instead of noise.
        nn.init.zeros_(self.proj.weight)
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)

    #: ``forward`` accepts ``num_values`` to predict only the leading values (temporal slots).
    partial_values = True

    def forward(
        self,
        tokens: torch.Tensor,
        latent: SparseLatent | None = None,
        *,
        num_values: int | None = None,
    ) -> torch.Tensor:
        """tokens ``[N, width]`` -> values ``[N, num_values or value_dim]`` (``latent`` is
        not needed: every token is decoded on its own)."""
        if num_values is None or num_values == self.value_dim:
            return self.proj(tokens)  # [N, value_dim]
        if not 0 < num_values <= self.value_dim:
            raise ConfigError(f"pixels: num_values must be in [1, {self.value_dim}]")
        bias = None if self.proj.bias is None else self.proj.bias[:num_values]
        return F.linear(tokens, self.proj.weight[:num_values], bias)  # [N, num_values]


@hookimpl
def register_heads(register) -> None:
    register("pixels", PixelHead)
