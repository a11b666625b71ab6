"""The decoder: a transformer from the sparse latent back to tokens a head turns into values.

Shapes: latent feats [N, L] (L = latent_dim), coords int32 [N, 4], seqlens int64 [B]
-> tokens [N, C] (C = decoder width). Nothing is padded; each sample attends to itself only and
4D RoPE carries the positions (the official decoder: RMSNorm, qk-norm, no biases). With a
``pos_grid`` the learned 2D position table (:class:`~atoken.core.patch_embed.PositionTable2D`)
is added to the input projection, as the official decoder's ``pos_embedder`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atoken.core.attention import AttentionFn, attention_sdpa
from atoken.core.config import BackboneConfig
from atoken.core.errors import ConfigError
from atoken.core.patch_embed import PositionTable2D
from atoken.core.transformer import Transformer, make_norm

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Input projection from the latent, a transformer stack and a final norm.

    Args:
        config: the decoder stack.
        latent_dim: L, the latent channels it reads.
        attention_fn: the packed attention backend.
        final_norm: normalise the tokens after the last block (the official decoder does;
            without it the decoder can start as an exact linear map, see
            :func:`atoken.engine.pca_init.init_from_pca`).
        pos_grid: the native ``(rows, cols)`` of a learned 2D position table added to the
            input (None: no table, positions come from RoPE only).
    """

    def __init__(
        self,
        config: BackboneConfig,
        *,
        latent_dim: int,
        attention_fn: AttentionFn = attention_sdpa,
        final_norm: bool = True,
        pos_grid: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, BackboneConfig):
            raise ConfigError(f"Decoder needs a BackboneConfig, got {type(config).__name__}")
        if latent_dim < 1:
            raise ConfigError(f"Decoder latent_dim must be >= 1, got {latent_dim}")
        self.config, self.latent_dim = config, latent_dim
        self.in_proj = nn.Linear(latent_dim, config.width, bias=config.bias)
        self.pos_table = None if pos_grid is None else PositionTable2D(config.width, pos_grid)
        self.transformer = Transformer.from_config(config, attention_fn=attention_fn)
        self.norm = (
            make_norm(config.norm, config.width, eps=config.norm_eps, bias=config.bias)
            if final_norm
            else nn.Identity()
        )

    @property
    def width(self) -> int:
        """C, the decoder width."""
        return self.config.width

    def set_attention_fn(self, attention_fn: AttentionFn) -> None:
        """Use ``attention_fn`` in every attention layer from now on."""
        self.transformer.set_attention_fn(attention_fn)

    def forward(
        self, latent: torch.Tensor, coords: torch.Tensor, seqlens: torch.Tensor
    ) -> torch.Tensor:
        """``latent [N, L]``, ``coords [N, 4]``, ``seqlens [B]`` -> tokens ``[N, C]``."""
        if latent.ndim != 2 or latent.shape[1] != self.latent_dim:
            raise ConfigError(
                f"decoder expects a latent [N, {self.latent_dim}], got {tuple(latent.shape)}"
            )
        x = self.embed(latent, coords, seqlens)  # [N, C]
        x = self.transformer(x, seqlens, coords)  # [N, C]
        return self.norm(x)

    def embed(
        self, latent: torch.Tensor, coords: torch.Tensor, seqlens: torch.Tensor
    ) -> torch.Tensor:
        """The blocks' input: ``in_proj(latent)`` (+ the position table) ``[N, C]``."""
        x = self.in_proj(latent)  # [N, C]
        if self.pos_table is not None:
            x = x + self.pos_table(coords, seqlens).to(x.dtype)  # [N, C]
        return x
