"""Helpers shared by the ``atoken`` commands (the modules of :mod:`atoken.cli` and the
families' commands): typed errors as click errors, loading a tokenizer from a run or a folder,
tables, and the options of commands that write a store (``--storage-options``, ``--wait``).

The command modules import these from here, never from :mod:`atoken.cli` (the package that adds
them to the group) or from one another, so the command line has no import cycle and no command
module reaches into another.
"""

from __future__ import annotations

import json
from typing import Any

import click

from atoken.core.errors import AtokenError

__all__ = [
    "fail",
    "load_tokenizer",
    "parse_storage_options",
    "storage_option",
    "table",
    "wait_option",
]


def fail(exc: AtokenError) -> click.ClickException:
    """A typed error as the click error a command raises (``TypeName: message``)."""
    return click.ClickException(f"{type(exc).__name__}: {exc}")


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


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """The ``--storage-options`` JSON object as a dict (``{}`` when not given).

    Raises:
        click.BadParameter: not JSON, or not a JSON object.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--storage-options") from exc
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--storage-options")
    return value


#: ``--storage-options JSON`` (read it with :func:`parse_storage_options`).
storage_option = click.option(
    "--storage-options",
    default=None,
    help='fsspec options as JSON, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'.',
)

#: ``--wait SECONDS`` for another writer of the store.
wait_option = click.option(
    "--wait",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for another writer of the store to finish.",
)
