"""The ``atoken`` command line (click). ``atoken --help`` lists the commands."""

from __future__ import annotations

import json
import sys

import click

import atoken
from atoken.core.errors import AtokenError
from atoken.plugins.manager import get_registry, list_plugins

__all__ = ["main", "plugins_report"]


def plugins_report() -> dict:
    """Every plugin (name, distribution, version, hooks) and every component by kind."""
    registries = get_registry()
    return {
        "atoken_version": atoken.__version__,
        "plugins": [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "hooks": list(p.hooks),
            }
            for p in list_plugins()
        ],
        "components": {
            kind: [{"name": n, "plugin": reg.plugin_of(n)} for n in reg.names()]
            for kind, reg in registries.by_kind().items()
        },
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(atoken.__version__, prog_name="atoken")
def main() -> None:
    """atoken: a unified, plugin-based vision tokenizer."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List installed plugins and the components they register."""
    try:
        report = plugins_report()
    except AtokenError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo("Plugins")
    rows = [(p["name"], p["distribution"], p["version"]) for p in report["plugins"]]
    _table(("plugin", "distribution", "version"), rows)
    click.echo("\nComponents")
    rows = [
        (kind, c["name"], c["plugin"])
        for kind, comps in report["components"].items()
        for c in comps
    ]
    _table(("kind", "name", "plugin"), rows)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
