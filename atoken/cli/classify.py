"""``atoken classify``: zero-shot classification of image files with a saved tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from atoken.core.errors import AtokenError

__all__ = ["classify"]


@click.command()
@click.option("--checkpoint", required=True, help="A saved tokenizer or a run folder.")
@click.option("--labels", required=True, help='Comma-separated class names, e.g. "cat,dog".')
@click.option(
    "--template",
    default="{}",
    show_default=True,
    help='The prompt of a label, e.g. "a photo of the digit {}".',
)
@click.option(
    "--sigmoid",
    is_flag=True,
    help="SigLIP scores: each label's own probability sigmoid(exp(logit_scale) * cos + "
    "logit_bias) with the tokenizer's scale and bias (the official ones for a converted "
    "official folder), instead of a softmax over the labels.",
)
@click.argument("images", nargs=-1, required=True)
def classify(
    checkpoint: str, labels: str, template: str, sigmoid: bool, images: tuple[str, ...]
) -> None:
    """Print each image's probability for every label (zero-shot, no training)."""
    from atoken.cli.common import fail, load_tokenizer, table
    from atoken.data.pixels import to_image_tensor
    from atoken.zeroshot import classify as classify_images
    from atoken.zeroshot import parse_labels

    try:
        names = parse_labels(labels)
        model = load_tokenizer(checkpoint)
        tensors = [to_image_tensor(p) for p in images]
        if sigmoid:
            probs = _sigmoid_scores(model, tensors, names, template)  # [B, K]
        else:
            probs = classify_images(model, tensors, names, template=template)  # [B, K]
    except AtokenError as exc:
        raise fail(exc) from exc
    fmt = "{:.4g}" if sigmoid else "{:.4f}"  # SigLIP scores are often far below 1e-4
    rows = []
    for path, row in zip(images, probs.tolist(), strict=True):
        best = names[max(range(len(names)), key=row.__getitem__)]
        rows.append((Path(path).name, *(fmt.format(p) for p in row), best))
    table(("image", *names, "best"), rows)


def _sigmoid_scores(model: Any, images: list[Any], names: list[str], template: str) -> Any:
    """``sigmoid(semantic.logits(image, text))`` ``[B, K]``: SigLIP's per-label probabilities.

    Raises:
        ConfigError: a template without ``{}``, or a tokenizer without a text encoder.
    """
    import torch

    from atoken.core.errors import ConfigError

    if "{}" not in template:
        raise ConfigError(f"the prompt template must contain '{{}}', got {template!r}")
    if getattr(model, "semantic", None) is None:
        raise ConfigError("zero-shot classification needs a tokenizer with a text encoder")
    with torch.no_grad():
        image = model.embed(images, "image")  # [B, D]
        text = model.embed_text([template.format(n) for n in names])  # [K, D]
        return torch.sigmoid(model.semantic.logits(image, text))  # [B, K]
