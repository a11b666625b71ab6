"""The encoder: a transformer over the packed tokens of all samples.

Shapes:
    B  samples, N tokens of all samples packed (nothing padded), C width
    P  values per token (4 x 16 x 16 x 3 = 3072 by default, see :mod:`atoken.core.patch_embed`)
    values [N, P], coords int32 [N, 4] = (t, x, y, z), seqlens int64 [B]

Pipeline: ``PatchEmbed4D`` -> + resized 2D position table -> blocks with 4D RoPE in every
attention layer (each sample attends to itself only) -> final norm -> tokens ``[N, C]``.
The MAP head pools the final tokens of each sample into an L2-normalised ``[B, C]`` embedding.
The attention backend is injected (``attention_fn``); the core never resolves names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atoken.core.attention import AttentionFn, attention_sdpa
from atoken.core.config import EncoderConfig
from atoken.core.errors import ConfigError
from atoken.core.latent import SparseLatent
from atoken.core.patch_embed import PatchEmbed4D, PositionTable2D
from atoken.core.pooling import MAPHead
from atoken.core.transformer import Transformer, make_norm

__all__ = ["Encoder"]


class Encoder(nn.Module):
    """Patch embedding, position, transformer, final norm and MAP head.

    Args:
        config: the :class:`EncoderConfig`.
        attention_fn: the packed attention backend ``fn(q, k, v, seqlens)``.
    """

    def __init__(
        self, config: EncoderConfig, *, attention_fn: AttentionFn = attention_sdpa
    ) -> None:
        super().__init__()
        if not isinstance(config, EncoderConfig):
            raise ConfigError(f"Encoder needs an EncoderConfig, got {type(config).__name__}")
        self.config = config
        bb = config.backbone
        self.patch_embed = PatchEmbed4D(
            bb.width,
            patch_size=config.patch_size,
            temporal_patch=config.temporal_patch,
            in_channels=config.in_channels,
            bias=bb.bias,
        )
        self.pos_table = PositionTable2D(bb.width, config.pos_grid) if config.pos_table else None
        self.transformer = Transformer.from_config(bb, attention_fn=attention_fn)
        self.norm = (
            make_norm(bb.norm, bb.width, eps=bb.norm_eps, bias=bb.bias)
            if config.final_norm
            else nn.Identity()
        )
        self.head = None
        if config.map_head:
            self.head = MAPHead(
                bb.width,
                bb.heads,
                config.map_mlp_hidden or bb.mlp_hidden,
                norm=bb.norm,
                eps=bb.norm_eps,
                bias=bb.bias,
                act=bb.act,
            )

    @property
    def width(self) -> int:
        """C, the token width."""
        return self.config.backbone.width

    def set_attention_fn(self, attention_fn: AttentionFn) -> None:
        """Use ``attention_fn`` in every attention layer from now on."""
        self.transformer.set_attention_fn(attention_fn)

    def forward(
        self,
        values: torch.Tensor,
        coords: torch.Tensor,
        seqlens: torch.Tensor,
        *,
        grids: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """``values [N, P]``, ``coords int32 [N, 4]``, ``seqlens int64 [B]`` -> tokens ``[N, C]``.

        Args:
            grids: each sample's ``(rows, cols)`` for the position table (default: the extent
                of its coordinates).
        """
        x = self.patch_embed(values)  # [N, C]
        return self.forward_tokens(x, coords, seqlens, grids=grids)

    def forward_tokens(
        self,
        x: torch.Tensor,
        coords: torch.Tensor,
        seqlens: torch.Tensor,
        *,
        grids: Sequence[tuple[int, int]] | None = None,
        pos_samples: Sequence[bool] | None = None,
    ) -> torch.Tensor:
        """Embedded tokens ``x [N, C]`` (from the patch embedding or a modality's own
        projection) -> final tokens ``[N, C]``.

        Args:
            grids: as in :meth:`forward`.
            pos_samples: per sample, whether the 2D position table applies (a modality's
                ``uses_pos_table``); None: every sample.
        """
        if self.pos_table is not None:
            x = x + self._positions(coords, seqlens, grids, pos_samples).to(x.dtype)  # [N, C]
        x = self.transformer(x, seqlens, coords)  # [N, C]
        return self.norm(x)

    def _positions(
        self,
        coords: torch.Tensor,
        seqlens: torch.Tensor,
        grids: Sequence[tuple[int, int]] | None,
        pos_samples: Sequence[bool] | None,
    ) -> torch.Tensor:
        """The position table's vectors ``[N, C]``; zero for samples it does not apply to."""
        if pos_samples is None or all(pos_samples):
            return self.pos_table(coords, seqlens, grids)  # [N, C]
        N = coords.shape[0]
        out = self.pos_table.weight.new_zeros(N, self.width)  # [N, C]
        use = [b for b, flag in enumerate(pos_samples) if flag]
        if not use:
            return out
        member = torch.zeros(len(pos_samples), dtype=torch.bool, device=coords.device)
        member[use] = True
        lengths = seqlens.to(coords.device)
        rows = torch.nonzero(member.repeat_interleave(lengths, output_size=N)).flatten()  # [n]
        sub_grids = None if grids is None else [grids[b] for b in use]
        out[rows] = self.pos_table(coords[rows], lengths[use], sub_grids)  # [n, C]
        return out

    def encode(self, latent: SparseLatent) -> SparseLatent:
        """Encode a latent whose feats are (normalised) patch values: feats become ``[N, C]``."""
        tokens = self(latent.feats, latent.coords, latent.seqlens)  # [N, C]
        return SparseLatent(
            tokens,
            latent.coords,
            latent.seqlens,
            modality=latent.modality,
            meta=latent.meta,
            validate=False,
        )

    def pool(self, tokens: torch.Tensor, seqlens: torch.Tensor) -> torch.Tensor:
        """The MAP head: tokens ``[N, C]`` -> L2-normalised embeddings ``[B, C]``.

        Raises:
            ConfigError: when the encoder was built without a MAP head.
        """
        if self.head is None:
            raise ConfigError("this encoder has no MAP head (map_head=False)")
        return self.head(tokens, seqlens)
