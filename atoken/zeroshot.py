"""Zero-shot classification with a text-aligned tokenizer.

Shapes: B images -> embeddings ``[B, D]``; K labels -> prompts -> text embeddings ``[K, D]``;
probabilities ``[B, K]`` = softmax over labels of ``exp(logit_scale) * img @ txt.T`` (the
tokenizer's learned SigLIP scale; the bias is the same for every label, so it cancels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from atoken.core.errors import ConfigError

__all__ = ["classify", "parse_labels"]


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """A comma list (``"cat,dog"``) or a sequence of labels, stripped; empty ones dropped.

    Raises:
        ConfigError: no label is left (an empty label list).
    """
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    out = [str(x).strip() for x in items if str(x).strip()]
    if not out:
        raise ConfigError(
            f"the label list is empty (got {labels!r}); give at least one label, e.g. "
            '--labels "cat,dog"'
        )
    return out


@torch.no_grad()
def classify(
    tokenizer: Any,
    images: Any,
    labels: str | Sequence[str],
    *,
    template: str = "{}",
    modality: str = "image",
) -> torch.Tensor:
    """Per-image probabilities over ``labels`` ``[B, K]`` (rows sum to 1).

    Args:
        tokenizer: a :class:`~atoken.Tokenizer` with a text encoder.
        images: what ``tokenizer.embed`` accepts.
        labels: the class names (a comma list or a sequence).
        template: the prompt of a label, ``"{}"`` (the label itself) or e.g.
            ``"a photo of the digit {}"``.

    Raises:
        ConfigError: an empty label list, a template without ``{}``, or a tokenizer without a
            text encoder.
    """
    names = parse_labels(labels)
    if "{}" not in template:
        raise ConfigError(f"the prompt template must contain '{{}}', got {template!r}")
    if getattr(tokenizer, "semantic", None) is None:
        raise ConfigError(
            "zero-shot classification needs a tokenizer with a text encoder: train one with a "
            "text_alignment task, or attach a text tower to an official checkpoint "
            "(atoken convert official CHECKPOINT OUT --text-tower FILE)"
        )
    image = tokenizer.embed(images, modality)  # [B, D]
    text = tokenizer.embed_text([template.format(n) for n in names])  # [K, D]
    scale = tokenizer.semantic.logit_scale.exp()
    return torch.softmax(scale * image.float() @ text.float().T, dim=-1)  # [B, K]
