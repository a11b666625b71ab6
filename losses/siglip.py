"""The ``siglip`` semantic loss: SigLIP's sigmoid loss over every image-text pair of a batch.

Shapes: image embeddings ``[B, D]`` (the prediction) and text embeddings ``[T, D]`` (the
target), both L2-normalised. ``positives`` ``[B, T]`` (bool) says which pairs match; without
it T must equal B and pair i matches text i (the diagonal).

    logits = exp(logit_scale) * img @ txt.T + logit_bias          [B, T]
    z      = +1 for a matching pair, -1 otherwise                 [B, T]
    loss   = -sum log sigmoid(z * logits) / B

(open_clip's ``SigLipLoss`` with one device.) The learnable ``logit_scale`` (log space) starts
at log 10 and ``logit_bias`` at -10, SigLIP's initialisation; the bias matters because most
pairs are negatives. When the context carries ``logit_scale`` and ``logit_bias`` (a
tokenizer's :class:`~atoken.core.semantic.SemanticProjection` passes its own, so they are
trained and saved with the checkpoint), those are used instead of the loss's parameters.
Captions shared by several images (class captions) are passed once with ``positives`` marking
every image of the class, so equal captions are never treated as negatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import EmbeddingSizeError, ModalityInputError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["SigLIPLoss", "check_embeddings", "siglip_loss"]


def check_embeddings(image: Any, text: Any, who: str) -> None:
    """Both ``[*, D]`` float tensors of one D, else a typed error."""
    for what, x in (("image", image), ("text", text)):
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
            raise ModalityInputError(
                f"{who}: {what} embeddings must be a float tensor [n, D], got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
    if image.shape[1] != text.shape[1]:
        raise EmbeddingSizeError(
            f"{who}: image embeddings are {image.shape[1]}-d but text embeddings are "
            f"{text.shape[1]}-d; both must live in one space"
        )


def siglip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    positives: torch.Tensor | None = None,
) -> torch.Tensor:
    """The sigmoid loss of ``image`` ``[B, D]`` and ``text`` ``[T, D]`` (see module doc)."""
    check_embeddings(image, text, "siglip")
    B, T = image.shape[0], text.shape[0]
    if positives is None:
        if B != T:
            raise ModalityInputError(
                f"siglip: {B} images and {T} texts; pass positives [B, T] when they differ"
            )
        positives = torch.eye(B, dtype=torch.bool, device=image.device)  # [B, B]
    elif tuple(positives.shape) != (B, T):
        raise ModalityInputError(
            f"siglip: positives must be [{B}, {T}], got {tuple(positives.shape)}"
        )
    dtype = torch.promote_types(image.dtype, torch.float32)  # fp32 at least (bf16 autocast)
    img, txt = image.to(dtype), text.to(dtype)
    logits = logit_scale.to(dtype).exp() * img @ txt.T + logit_bias.to(dtype)  # [B, T]
    signs = positives.to(logits.device, dtype) * 2 - 1  # [B, T]: +1 match, -1 otherwise
    return -F.logsigmoid(signs * logits).sum() / max(B, 1)


class SigLIPLoss(nn.Module):
    """The SigLIP sigmoid loss with a learnable logit scale and bias.

    Args:
        init_logit_scale: log-space scale at initialisation (log 10).
        init_logit_bias: bias at initialisation (-10).

    Called as ``loss(image_emb [B, D], text_emb [T, D], context)``; the context may hold
    ``positives`` ``[B, T]``, ``logit_scale`` and ``logit_bias`` (see module doc).
    """

    name = "siglip"
    inputs = "embeddings"  # what it consumes (docs/losses.md#inputs)

    def __init__(
        self, *, init_logit_scale: float = math.log(10.0), init_logit_bias: float = -10.0
    ) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, context: Mapping[str, Any]
    ) -> torch.Tensor:
        scale = context.get("logit_scale", self.logit_scale)
        bias = context.get("logit_bias", self.logit_bias)
        return siglip_loss(prediction, target, scale, bias, context.get("positives"))

    def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Normalised image and text embeddings ``[4, 8]`` for the loss contract."""
        g = torch.Generator().manual_seed(0)
        image = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
        text = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
        return image, text, {}


@hookimpl
def register_losses(register) -> None:
    register("siglip", SigLIPLoss)
