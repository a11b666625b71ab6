"""``atoken eval``: reconstruct a held-out set and report metrics (and semantic ones for a
tokenizer aligned to text, on captioned data). A metric that cannot run on the data (a
distributional one on images under its 128 px tiles, or one that fails) is skipped with a line
saying why.

Any modality: ``--modality NAME --data PATH`` reads a folder of the modality's sample files
(its ``file_extensions``, read with its ``load``) or a media store of that modality; the
default metrics are the registered ones that score its ``sample_kind`` (a point cloud's
``chamfer`` and ``emd``), each named in the table."""

from __future__ import annotations

from typing import Any

import click

from atoken.cli.common import fail, load_tokenizer, table
from atoken.core.errors import AtokenError, ConfigError
from atoken.plugins.manager import get_registry

__all__ = ["eval_command"]


@click.command(name="eval")
@click.option("--checkpoint", required=True, help="A saved tokenizer or a run folder.")
@click.option(
    "--data",
    default="photos",
    show_default=True,
    help="'photos' (the held-out bundled photos), 'digits' (held-out captioned digits) or a "
    "folder of images.",
)
@click.option(
    "--metrics",
    default=None,
    help="Image metrics [default: psnr,ssim,fd_effnet; psnr,ssim for digits]. With captioned "
    "data and a text-aligned tokenizer, zeroshot and retrieval are added.",
)
@click.option(
    "--modality",
    default=None,
    help="The samples' modality [default: image]: --data is then a folder of its sample files "
    "or a media store of it, and the default metrics are those registered for its samples.",
)
@click.option("--digit-classes", default="", help="Digits to evaluate, e.g. '0,1,2' (default all).")
@click.option(
    "--digit-size",
    type=click.IntRange(min=8),
    default=64,
    show_default=True,
    help='Digits: the run\'s digits source size (data = { source = "digits", size = ... }).',
)
@click.option(
    "--digit-seed",
    type=int,
    default=0,
    show_default=True,
    help="Digits: the run's [run] seed, which chose its held-out split (another seed would "
    "evaluate on training images).",
)
@click.option(
    "--heldout-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Digits: the run's digits source heldout_fraction.",
)
def eval_command(
    checkpoint: str,
    data: str,
    metrics: str | None,
    modality: str | None,
    digit_classes: str,
    digit_size: int,
    digit_seed: int,
    heldout_fraction: float,
) -> None:
    """Reconstruct a held-out set and report metrics (and semantic ones when the tokenizer is
    aligned to text and the data has captions). A metric that cannot run on the data is
    skipped with a line saying why."""
    from atoken.data import HELDOUT_PHOTOS, ImageFolder, PhotoSet
    from atoken.plugins.metrics.base import split_failures
    from atoken.tasks import evaluate_samples, tile_problem
    from atoken.tasks.alignment import evaluate_semantic, heldout_digits

    try:
        model = load_tokenizer(checkpoint)
        if modality and model.modality(modality).sample_kind != "picture":
            return _evaluate_modality(model, modality, data, metrics)
        captioned = (
            heldout_digits(
                digit_classes,
                size=digit_size,
                seed=digit_seed,
                heldout_fraction=heldout_fraction,
            )
            if data == "digits"
            else None
        )
        if captioned is not None:
            images = list(captioned.images.unbind(0))
        else:
            source = PhotoSet(HELDOUT_PHOTOS) if data == "photos" else ImageFolder(data)
            images = [source[i].float() / 255 for i in range(len(source))]
        default = "psnr,ssim" if captioned is not None else "psnr,ssim,fd_effnet"
        registry = get_registry()
        names = []
        for name in (m for m in (metrics or default).split(",") if m):
            problem = tile_problem(name, registry.metrics.get(name), images, "images")
            if problem:  # a distributional metric with no tile to score: known before building it
                click.echo(f"skipped: {problem}")
            else:
                names.append(name)
        chosen = {m: registry.metrics.create(m) for m in names}
        semantic = {k: v for k, v in chosen.items() if getattr(v, "inputs", "") == "embeddings"}
        chosen = {k: v for k, v in chosen.items() if k not in semantic}
        if captioned is not None and model.semantic is not None and not semantic:
            semantic = {m: registry.metrics.create(m) for m in ("zeroshot", "retrieval")}
        recon = [y.clamp(0, 1) for y in model.reconstruct(images)] if chosen else []
        values = evaluate_samples(chosen, recon, images) if chosen else {}
        if semantic and captioned is not None:
            values.update(evaluate_semantic(model, captioned, semantic))
    except AtokenError as exc:
        raise fail(exc) from exc
    values, failed = split_failures(values)
    for key, reason in failed.items():
        click.echo(f"skipped: metric {key!r} cannot run on this data: {reason}")
    table(("metric", "value"), [(k, f"{v:.4f}") for k, v in values.items()])


def _evaluate_modality(model: Any, modality: str, data: str, metrics: str | None) -> None:
    """``atoken eval --modality NAME`` for a modality whose samples are not pictures."""
    from atoken.data.modality_files import modality_files
    from atoken.plugins.metrics.base import metric_scores, split_failures
    from atoken.tasks import evaluate_samples

    try:
        samples, _ = modality_files(model, modality, data)
        registry = get_registry()
        kind = model.modality(modality).sample_kind
        names = [m for m in (metrics or "").split(",") if m] or [
            n for n in registry.metrics.names() if _scores(registry.metrics.get(n), modality, kind)
        ]
        if not names:
            raise ConfigError(
                f"no registered metric scores {kind!r} samples ({modality!r}); name one with "
                "--metrics or install a plugin that registers one"
            )
        chosen = {m: registry.metrics.create(m) for m in names}
        for name, metric in chosen.items():
            if not metric_scores(metric, modality, kind):
                raise ConfigError(f"metric {name!r} does not score {modality!r} ({kind}) samples")
        recon = model.reconstruct(samples, modality)
        values = evaluate_samples(chosen, recon, samples)
    except AtokenError as exc:
        raise fail(exc) from exc
    values, failed = split_failures(values)
    for key, reason in failed.items():
        click.echo(f"skipped: metric {key!r} cannot run on this data: {reason}")
    click.echo(f"{len(samples)} {modality} samples from {data}")
    table(("metric", "value"), [(k, f"{v:.4g}") for k, v in values.items()])


def _scores(factory: Any, modality: str, kind: str) -> bool:
    """Whether a registered metric is for these samples by its own declaration (it names the
    modality or accepts the kind; a metric that declares nothing is not picked by default),
    and is not distributional."""
    from atoken.plugins.metrics.base import metric_scores

    declares = getattr(factory, "modality", None) or getattr(factory, "accepts", ())
    distributional = getattr(factory, "distributional", False)
    return bool(declares) and metric_scores(factory, modality, kind) and not distributional
