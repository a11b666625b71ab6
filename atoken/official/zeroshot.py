"""The official zero-shot constants: SigLIP logits of AToken's image embedding and a text one.

The released checkpoints hold no text tower and no logit parameters: the official model
hard-codes ``logit_scale = 4.8438`` (log space) and ``logit_bias = -15.5625``. Its image
embedding is the MAP head's output, L2-normalised, with no separate W_s (the head's own output
projection plays that role); the text side is SigLIP2-So400m's text tower (1152-d, not
bundled). ``logits = exp(logit_scale) * img @ txt.T + logit_bias`` (about 127.0 * cos - 15.6).
"""

from __future__ import annotations

import math

import torch

__all__ = ["OFFICIAL_LOGIT_BIAS", "OFFICIAL_LOGIT_SCALE", "official_logits"]

OFFICIAL_LOGIT_SCALE: float = 4.8438
OFFICIAL_LOGIT_BIAS: float = -15.5625


def official_logits(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """SigLIP logits ``[B, T]`` of L2-normalised image ``[B, D]`` and text ``[T, D]`` rows with
    the official constants (float32)."""
    scale = math.exp(OFFICIAL_LOGIT_SCALE)
    return scale * image.float() @ text.float().T + OFFICIAL_LOGIT_BIAS
