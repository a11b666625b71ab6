"""Helpers shared by the modules of :mod:`atoken.cli`: loading a tokenizer from a run or a
folder, tables, and (from :mod:`atoken.plugins.command_kit`, where a family's commands find
them too) typed errors as click errors, the options of commands that write a store
(``--storage-options``, ``--wait``) and an importer's report.

The command modules import these from here, never from :mod:`atoken.cli` (the package that adds
them to the group) or from one another, so the command line has no import cycle and no command
module reaches into another.
"""

from __future__ import annotations

import click

from atoken.plugins.command_kit import (
    echo_import,
    fail,
    parse_storage_options,
    storage_option,
    wait_option,
)

__all__ = [
    "echo_import",
    "fail",
    "load_tokenizer",
    "parse_storage_options",
    "storage_option",
    "table",
    "wait_option",
]


def load_tokenizer(checkpoint: str):
    """The tokenizer in ``checkpoint``, a run folder or a tokenizer folder, in eval mode."""
    from pathlib import Path

    from atoken.tokenizer import Tokenizer

    folder = Path(checkpoint)
    if (folder / "tokenizer" / "config.json").exists():  # a run folder
        folder = folder / "tokenizer"
    model = Tokenizer.from_pretrained(folder)
    model.eval()
    return model


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Echo ``rows`` under ``header`` in left-aligned columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
