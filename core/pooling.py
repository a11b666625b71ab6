"""Multihead attention pooling (MAP): one embedding per sample from its packed tokens.

Shapes:
    B  samples, N tokens of all samples packed, C width, H heads, D = C / H
    x [N, C], seqlens int64 [B] -> [B, C]

One learned probe queries the tokens of each sample (cross-attention, the sample's tokens only),
followed by an output projection and a residual MLP on a LayerNorm:
``y = proj(attn(probe, x)); y = y + mlp(norm(y))``, then L2 normalisation. This is SigLIP's
``MAP`` head (timm ``AttentionPoolLatent`` with one latent), written for packed samples: the
softmax runs over each sample's contiguous segment, in float32.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import ConfigError
from atoken.core.transformer import Mlp, make_norm

__all__ = ["MAPHead"]


class MAPHead(nn.Module):
    """Attention pooling with one learned probe, per sample.

    Args:
        width: C.
        heads: H (C must be a multiple of it).
        mlp_hidden: hidden width of the residual MLP.
        norm, eps: the norm before the MLP.
        bias: biases of the projections, the norm and the MLP.
        act: the MLP activation.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_hidden: int,
        *,
        norm: Literal["layernorm", "rmsnorm"] = "layernorm",
        eps: float = 1e-6,
        bias: bool = True,
        act: Literal["gelu_tanh", "gelu"] = "gelu_tanh",
    ) -> None:
        super().__init__()
        if heads < 1 or width % heads:
            raise ConfigError(f"MAPHead: width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.probe = nn.Parameter(torch.empty(1, width))  # [1, C]
        nn.init.trunc_normal_(self.probe, std=width**-0.5)
        self.q = nn.Linear(width, width, bias=bias)
        self.kv = nn.Linear(width, 2 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.norm = make_norm(norm, width, eps=eps, bias=bias)
        self.mlp = Mlp(width, mlp_hidden, bias=bias, act=act)

    def forward(
        self, x: torch.Tensor, seqlens: torch.Tensor, *, normalize: bool = True
    ) -> torch.Tensor:
        """``x [N, C]`` of samples ``seqlens [B]`` -> ``[B, C]`` (L2-normalised by default).

        A sample without tokens pools to zero before the projection.
        """
        N, C = x.shape
        H, D = self.heads, self.head_dim
        B = int(seqlens.shape[0])
        lengths = seqlens.to(x.device)
        q = self.q(self.probe).float().view(H, D)  # [H, D]
        kv = self.kv(x).view(N, 2, H, D)  # [N, 2, H, D]
        k, v = kv[:, 0].float(), kv[:, 1].float()  # [N, H, D] each
        logits = (k * q).sum(-1) / math.sqrt(D)  # [N, H]
        # Segment softmax over each sample's contiguous rows (segment_reduce: no scatter).
        peak = torch.segment_reduce(logits, "max", lengths=lengths, axis=0, unsafe=True)  # [B, H]
        peak = torch.nan_to_num(peak, neginf=0.0)  # empty samples
        w = torch.exp(logits - peak.repeat_interleave(lengths, dim=0, output_size=N))  # [N, H]
        denom = torch.segment_reduce(w, "sum", lengths=lengths, axis=0, unsafe=True)  # [B, H]
        pooled = torch.segment_reduce(
            w[..., None] * v, "sum", lengths=lengths, axis=0, unsafe=True
        )  # [B, H, D]
        pooled = pooled / denom.clamp_min(torch.finfo(torch.float32).tiny)[..., None]
        y = self.proj(pooled.reshape(B, C).to(x.dtype))  # [B, C]
        y = y + self.mlp(self.norm(y))
        if normalize:
            y = F.normalize(y.float(), dim=-1)
        return y
