"""The official zero-shot constants: SigLIP logits of AToken's image embedding and a text one.

The released checkpoints hold no text tower and no logit parameters: the official model
hard-codes ``logit_scale = 4.8438`` (log space) and ``logit_bias = -15.5625``. Its image
embedding is the MAP head's output, L2-normalised, with no separate W_s (the head's own output
projection plays that role); the text side is SigLIP2-So400m's text tower (1152-d, not
bundled). ``logits = exp(logit_scale) * img @ txt.T + logit_bias`` (about 127.0 * cos - 15.6);
as in SigLIP, ``sigmoid(logits)`` is each label's probability.

A converted tokenizer gets that text tower (``text_tower=`` of ``from_official``, ``atoken
convert official ... --text-tower``): the ``open_clip_text`` encoder on a local
``ViT-SO400M-16-SigLIP2-naflex`` checkpoint, and a semantic module holding W_s = identity with
zero bias (the MAP head's embedding is already in the text space: ``embed`` is unchanged) and
the official constants as its logit scale and bias.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "OFFICIAL_LOGIT_BIAS",
    "OFFICIAL_LOGIT_SCALE",
    "OFFICIAL_TEXT_MODEL",
    "official_logits",
    "official_semantic_state",
    "official_text_encoder",
]

OFFICIAL_LOGIT_SCALE: float = 4.8438
OFFICIAL_LOGIT_BIAS: float = -15.5625
#: The open_clip model whose text tower AToken's image embedding is aligned to.
OFFICIAL_TEXT_MODEL: str = "ViT-SO400M-16-SigLIP2-naflex"


def official_logits(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """SigLIP logits ``[B, T]`` of L2-normalised image ``[B, D]`` and text ``[T, D]`` rows with
    the official constants (float32)."""
    scale = math.exp(OFFICIAL_LOGIT_SCALE)
    return scale * image.float() @ text.float().T + OFFICIAL_LOGIT_BIAS


def official_text_encoder(
    text_tower: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    model_name: str = OFFICIAL_TEXT_MODEL,
) -> tuple[str, dict[str, Any]]:
    """``(text_encoder, text_encoder_params)`` of a converted config: the ``open_clip_text``
    tower of ``model_name`` from the local file ``text_tower`` (absolute paths, as the saved
    config keeps them; ``tokenizer``: a Hugging Face tokenizer folder, default the file's)."""
    params: dict[str, Any] = {
        "pretrained": str(Path(text_tower).expanduser().resolve()),
        "model_name": model_name,
    }
    if tokenizer is not None:
        params["tokenizer"] = str(Path(tokenizer).expanduser().resolve())
    return "open_clip_text", params


def official_semantic_state(width: int) -> dict[str, torch.Tensor]:
    """The semantic module's state for the official model: W_s = identity ``[C, C]``, zero bias,
    and the official logit scale and bias (float32)."""
    return {
        "semantic.proj.weight": torch.eye(width),
        "semantic.proj.bias": torch.zeros(width),
        "semantic.logit_scale": torch.tensor(OFFICIAL_LOGIT_SCALE),
        "semantic.logit_bias": torch.tensor(OFFICIAL_LOGIT_BIAS),
    }
