"""What a plugin's command is built from: the conventions every ``atoken`` command shares.

A family (or a third party) adds commands through the ``register_commands`` hook; it imports
these from here, never from :mod:`atoken.cli`, so its importer reads and fails like the built-in
ones:

* :func:`fail`: a typed :class:`~atoken.core.errors.AtokenError` as the click error a command
  raises (``TypeName: message``, exit status 1, no traceback);
* :data:`storage_option` and :func:`parse_storage_options`: ``--storage-options JSON`` for
  fsspec (S3 endpoints, keys);
* :data:`wait_option`: ``--wait SECONDS`` for another writer of the store;
* :func:`echo_import`: the report an importer prints (counts, then each skipped sample).

A command that writes a store::

    @click.command(name="points")
    @click.argument("paths", nargs=-1, required=True)
    @storage_option
    @wait_option
    def import_points(paths, storage_options, wait):
        *srcs, dst = paths
        try:
            report = my_import(srcs, dst, parse_storage_options(storage_options), wait)
        except AtokenError as exc:
            raise fail(exc) from exc
        echo_import(report, "point clouds", dst)
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import click

from atoken.core.errors import AtokenError

__all__ = [
    "ImportCounts",
    "echo_import",
    "fail",
    "parse_storage_options",
    "storage_option",
    "wait_option",
]


def fail(exc: AtokenError) -> click.ClickException:
    """A typed error as the click error a command raises (``TypeName: message``)."""
    return click.ClickException(f"{type(exc).__name__}: {exc}")


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


class ImportCounts(Protocol):
    """What an importer reports (:class:`atoken.data.importer.ImportReport` is one)."""

    added: int
    already_stored: int
    committed: int
    bad: tuple[tuple[str, str], ...]


def echo_import(report: ImportCounts, kind: str, dst: str) -> None:
    """Print an import report: counts, then each skipped sample and why (``kind``: what was
    imported, plural: ``"videos"``)."""
    click.echo(
        f"imported {report.added} {kind} into {dst} ({report.already_stored} already stored); "
        f"the store holds {report.committed} samples"
    )
    for name, reason in report.bad:
        click.echo(f"skipped {name}: {reason}")
