"""The semantic projection W_s: the MAP head's pooled embedding mapped into a text space.

Shapes: pooled ``[B, C]`` (C the encoder width) -> ``[B, D]`` (D the text encoder's size),
L2-normalised. The module also holds the learnable SigLIP logit scale and bias (log-space
scale initialised to log 10, bias to -10, SigLIP's values), so a checkpoint carries them and
zero-shot scores need no other state: ``logits = exp(logit_scale) * img @ txt.T + logit_bias``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SemanticProjection"]


class SemanticProjection(nn.Module):
    """W_s (a linear map C -> D with bias) plus the logit scale and bias of the text space.

    Args:
        in_dim: C, the encoder width.
        text_dim: D, the text encoder's embedding size.
        init_logit_scale: the log-space logit scale at initialisation (log 10).
        init_logit_bias: the logit bias at initialisation (-10).
    """

    def __init__(
        self,
        in_dim: int,
        text_dim: int,
        *,
        init_logit_scale: float = math.log(10.0),
        init_logit_bias: float = -10.0,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` -> L2-normalised ``[B, D]`` (float32)."""
        return F.normalize(self.proj(pooled).float(), dim=-1)

    def logits(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """SigLIP logits ``[B, T]`` of normalised image ``[B, D]`` and text ``[T, D]`` rows."""
        return self.logit_scale.exp() * image.float() @ text.float().T + self.logit_bias
