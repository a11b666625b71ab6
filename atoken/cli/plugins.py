"""``atoken plugins``: the installed plugins, the components they register, and their errors."""

from __future__ import annotations

import json

import click

import atoken
from atoken.cli.common import table
from atoken.cli.group import main
from atoken.core.errors import AtokenError
from atoken.plugins.manager import diagnose_plugins

__all__ = ["plugins", "plugins_report"]


def plugins_report() -> dict:
    """Every plugin (name, distribution, version, hooks, error) and every component by kind.

    A plugin that failed to load is listed too, after the others, with ``error`` set to
    ``{"type", "message", "stage"}`` (``None`` for plugins that loaded); none of its components
    are listed. So is a plugin whose ``register_commands`` failed the last time the command
    line was built (stage ``commands``; its components load, so they are listed). Nothing
    raises for a broken plugin: check ``error`` (``atoken plugins`` exits 1).
    """
    diagnosis = diagnose_plugins()
    loaded = {p.name for p in diagnosis.plugins}
    commands = [f for f in main.plugin_failures if f.name in loaded]
    failed = {f.name for f in commands}
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": list(p.hooks),
            "error": None,
        }
        for p in diagnosis.plugins
        if p.name not in failed
    ]
    plugins += [
        {
            "name": f.name,
            "distribution": f.distribution,
            "version": f.version,
            "hooks": list(f.hooks),
            "error": {"type": type(f.error).__name__, "message": str(f.error), "stage": f.stage},
        }
        for f in (*diagnosis.failures, *commands)
    ]
    return {
        "atoken_version": atoken.__version__,
        "plugins": plugins,
        "components": {
            kind: [{"name": n, "plugin": reg.plugin_of(n)} for n in reg.names()]
            for kind, reg in diagnosis.registries.by_kind().items()
        },
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins and the components they register.

    A plugin that fails to load is listed with its error, the others as usual, and the command
    exits with status 1.
    """
    try:
        report = plugins_report()
    except AtokenError as exc:
        raise click.ClickException(str(exc)) from exc
    broken = [p for p in report["plugins"] if p["error"] is not None]
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo("Plugins")
        rows = [
            (p["name"], p["distribution"], p["version"], "ok" if p["error"] is None else "FAILED")
            for p in report["plugins"]
        ]
        table(("plugin", "distribution", "version", "status"), rows)
        click.echo("\nComponents")
        rows = [
            (kind, c["name"], c["plugin"])
            for kind, comps in report["components"].items()
            for c in comps
        ]
        table(("kind", "name", "plugin"), rows)
        if broken:
            click.echo("\nFailed plugins")
            for p in broken:
                err = p["error"]
                click.echo(
                    f"{p['name']} (distribution {p['distribution']}, at {err['stage']}): "
                    f"{err['type']}: {err['message']}"
                )
    if broken:
        names = ",".join(p["name"] for p in broken)
        click.echo(
            f"Error: {len(broken)} plugin(s) failed to load: {names}. "
            f"Skip them with ATOKEN_DISABLE_PLUGINS={names}",
            err=True,
        )
        ctx.exit(1)
