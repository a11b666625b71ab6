"""``atoken report``: the HTML page of a run (:mod:`atoken.report`)."""

from __future__ import annotations

import click

from atoken.cli.common import fail
from atoken.core.errors import AtokenError

__all__ = ["report"]


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("more", nargs=-1, type=click.Path(file_okay=False), metavar="")
@click.option("--out", type=click.Path(dir_okay=False), help="[default: RUN_DIR/report.html]")
@click.option(
    "--compare",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Other run folders whose curves are overlaid: --compare A B (or --compare A --compare B).",
)
@click.option(
    "--pictures",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Show the pictures of the last N evaluations (0: all).",
)
def report(
    run_dir: str, more: tuple[str, ...], out: str | None, compare: tuple[str, ...], pictures: int
) -> None:
    """Write one self-contained HTML page of the run in RUN_DIR: curves, metrics, pictures,
    checkpoints and the run file (no server, no network)."""
    from atoken.report import write_report

    if more and not compare:
        raise click.UsageError(f"unexpected {' '.join(more)!r}: did you mean --compare?")
    try:
        path = write_report(run_dir, out, compare=(*compare, *more), pictures=pictures)
    except AtokenError as exc:
        raise fail(exc) from exc
    click.echo(f"report: {path}")
