"""``atoken classify``: zero-shot classification of image files with a saved tokenizer."""

from __future__ import annotations

from pathlib import Path

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
@click.argument("images", nargs=-1, required=True)
def classify(checkpoint: str, labels: str, template: str, images: tuple[str, ...]) -> None:
    """Print each image's probability for every label (zero-shot, no training)."""
    from atoken.cli_common import _fail, _load_tokenizer, _table
    from atoken.modalities.image import to_image_tensor
    from atoken.zeroshot import classify as classify_images
    from atoken.zeroshot import parse_labels

    try:
        names = parse_labels(labels)
        model = _load_tokenizer(checkpoint)
        tensors = [to_image_tensor(p) for p in images]
        probs = classify_images(model, tensors, names, template=template)  # [B, K]
    except AtokenError as exc:
        raise _fail(exc) from exc
    rows = []
    for path, row in zip(images, probs.tolist(), strict=True):
        best = names[max(range(len(names)), key=row.__getitem__)]
        rows.append((Path(path).name, *(f"{p:.4f}" for p in row), best))
    _table(("image", *names, "best"), rows)
