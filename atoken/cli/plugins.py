"""``atoken plugins``: the installed plugins, the components they register, and their errors;
``plugins new`` writes a plugin package to start from, ``plugins check`` runs the contracts of
an installed plugin's components (:mod:`atoken.scaffold`)."""

from __future__ import annotations

import json
import sys

import click

import atoken
from atoken.cli.common import fail, table
from atoken.cli.group import main
from atoken.core.errors import AtokenError
from atoken.plugins.manager import diagnose_plugins
from atoken.scaffold.writer import KINDS

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


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins and the components they register; ``new`` and ``check`` below.

    A plugin that fails to load is listed with its error, the others as usual, and the command
    exits with status 1.
    """
    if ctx.invoked_subcommand is not None:
        return
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


@plugins.command("new")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(list(KINDS)),
    required=True,
    help="What the plugin adds: a modality (with a data source), a loss, a head or a data source.",
)
@click.option(
    "--out",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write the package folder atoken-NAME.",
)
def new(name: str, kind: str, out: str) -> None:
    """Write a working plugin package atoken-NAME/ of one KIND to start from.

    It holds the component and its hook, tests that run atoken's contracts on it and a
    Hypothesis property (they pass as written: run pytest in the folder, nothing to install),
    and for a modality or a source a run file, train.toml, that trains it. NAME is a
    lower-case identifier; an existing folder is never overwritten.
    """
    from atoken.scaffold import new_plugin

    try:
        folder = new_plugin(name, kind, out)
    except AtokenError as exc:
        raise fail(exc) from exc
    click.echo(f"wrote {folder}")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        click.echo(f"  {path.relative_to(folder)}")
    click.echo(
        f"next: cd {folder} && pytest; then pip install -e . and atoken plugins check {name}"
    )


@plugins.command("check")
@click.argument("name")
@click.option("--verbose", "-v", is_flag=True, help="Also print pytest's report.")
@click.pass_context
def check(ctx: click.Context, name: str, verbose: bool) -> None:
    """Run atoken's contract tests on every component plugin NAME registered.

    One line per component: passed, FAILED with the first failure's reason, or skipped (with
    why). Exits with status 1 when a contract fails. Needs pytest.
    """
    from atoken.scaffold import check_plugin

    try:
        results = check_plugin(name, output=sys.stdout if verbose else None)
    except AtokenError as exc:
        raise fail(exc) from exc
    except ModuleNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if not results:
        click.echo(f"plugin {name!r} registers no components: nothing to check")
        return
    for r in results:
        status = "FAILED" if r.outcome == "failed" else r.outcome
        ran = f"{', '.join(r.contracts) or 'no contract'}: {r.tests} test(s)"
        click.echo(
            f"{status:7}  {r.kind} {r.name!r} ({ran})" + (f": {r.reason}" if r.reason else "")
        )
    failed = [r for r in results if not r.ok]
    if failed:
        click.echo(
            f"Error: {len(failed)} of {len(results)} component(s) of plugin {name!r} "
            "failed their contracts",
            err=True,
        )
        ctx.exit(1)
