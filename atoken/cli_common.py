"""Helpers shared by the ``atoken`` commands (:mod:`atoken.cli` and the command modules it
registers): typed errors as click errors, loading a tokenizer from a run or a folder, tables.

The command modules import these from here, never from :mod:`atoken.cli`, so the command
line has no import cycle.
"""

from __future__ import annotations

import click

from atoken.core.errors import AtokenError

__all__ = ["_fail", "_load_tokenizer", "_table"]


def _fail(exc: AtokenError) -> click.ClickException:
    return click.ClickException(f"{type(exc).__name__}: {exc}")


def _load_tokenizer(checkpoint: str):
    from pathlib import Path

    from atoken.tokenizer import Tokenizer

    folder = Path(checkpoint)
    if (folder / "tokenizer" / "config.json").exists():  # a run folder
        folder = folder / "tokenizer"
    model = Tokenizer.from_pretrained(folder)
    model.eval()
    return model


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
