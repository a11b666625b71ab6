"""The ``register_commands`` hook: plugins add ``atoken`` commands, run through its click main.

A plugin registered in-process adds a command (top level, or under an existing group); one
whose hook raises, or that reuses a name, is warned about by name, adds nothing, and the rest
of the command line works. The video and mesh importers are the built-in proof.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.modalities.mesh import cli as mesh_cli
from atoken.modalities.video import cli as video_cli
from atoken.plugins.commands import PluginCommandWarning
from atoken.testing import registered_plugin

ROOT = Path(__file__).resolve().parents[2]


class Hello:
    """A top-level command and a subcommand of ``atoken data import``."""

    @atoken.hookimpl
    def register_commands(self, cli):
        @cli.command(name="hello")
        @click.option("--name", default="world")
        def hello(name):
            """Say hello."""
            click.echo(f"hello {name}")

        @click.command(name="points")
        @click.argument("src")
        def points(src):
            """Import point clouds."""
            click.echo(f"points from {src}")

        cli.commands["data"].commands["import"].add_command(points)


class Exploding:
    @atoken.hookimpl
    def register_commands(self, cli):
        cli.add_command(click.Command("half-added", callback=lambda: None))
        raise RuntimeError("boom")


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_plugin_adds_commands_that_run_through_the_atoken_main():
    with registered_plugin(Hello(), name="hello-plugin"):
        result = _run("hello", "--name", "plugins")
        assert result.exit_code == 0, result.output
        assert result.output == "hello plugins\n"
        assert "hello" in _run("--help").output
        result = _run("data", "import", "points", "cloud.ply")
        assert result.exit_code == 0 and result.output == "points from cloud.ply\n"
        listed = _run("data", "import", "--help").output
        assert "points" in listed and "meshes" in listed and "images" in listed
    result = CliRunner().invoke(main, ["hello"])  # unregistered: its commands went with it
    assert result.exit_code == 2 and "No such command 'hello'" in result.output
    assert "points" not in _run("data", "import", "--help").output


def test_a_plugin_whose_hook_raises_is_named_and_the_rest_works():
    with registered_plugin(Exploding(), name="exploding-commands"):
        with registered_plugin(Hello(), name="hello-plugin"):
            with pytest.warns(PluginCommandWarning, match="'exploding-commands'") as record:
                result = _run("hello")
            assert result.exit_code == 0 and result.output == "hello world\n"
            message = str(record[0].message)
            assert "RuntimeError: boom" in message
            assert "ATOKEN_DISABLE_PLUGINS=exploding-commands" in message
            assert "half-added" not in main.commands  # what it added first is taken out
            with pytest.warns(PluginCommandWarning):
                result = _run("data", "import", "meshes", "--help")
            assert result.exit_code == 0 and "--pybullet" in result.output
            with pytest.warns(PluginCommandWarning):
                result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 1, result.output
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert len(plugins) == len(json.loads(result.stdout)["plugins"])  # listed once
    error = plugins["exploding-commands"]["error"]
    assert error == {"type": "RuntimeError", "message": "boom", "stage": "commands"}
    assert plugins["hello-plugin"]["error"] is None
    assert plugins["atoken.data.mesh_cli"]["error"] is None


@pytest.mark.parametrize(
    ("args", "owner"),
    [(("data", "import", "meshes"), "atoken.data.mesh_cli"), (("train",), "atoken.cli")],
)
def test_a_name_already_taken_is_refused_naming_both_plugins(args, owner):
    class Takes:
        @atoken.hookimpl
        def register_commands(self, cli):
            cli.add_command(click.Command("also-added", callback=lambda: None))
            *groups, name = args
            group = cli
            for g in groups:
                group = group.commands[g]
            group.add_command(click.Command(name, callback=lambda: click.echo("hijacked")))

    command = " ".join(("atoken", *args))
    with registered_plugin(Takes(), name="taker"):
        with pytest.warns(PluginCommandWarning) as record:
            result = _run(*args, "--help")
    assert result.exit_code == 0 and "hijacked" not in result.output
    message = str(record[0].message)
    assert f"command {command!r} is registered twice" in message
    assert f"first by plugin {owner!r}, then by plugin 'taker'" in message
    assert "also-added" not in main.commands  # none of the taker's commands are added


#: (command under ``data import``, family, its plugin's name, the family's command).
FAMILY_IMPORTERS = [
    ("meshes", "mesh", "atoken.data.mesh_cli", lambda: mesh_cli.import_meshes_command),
    ("videos", "video", "atoken.modalities.video.cli", lambda: video_cli.import_videos_command),
]


@pytest.mark.parametrize(("name", "family", "plugin", "command"), FAMILY_IMPORTERS)
def test_a_familys_importer_is_the_familys_command(name, family, plugin, command):
    main.build()
    imports = main.commands["data"].commands["import"]
    assert imports.commands[name] is command()
    assert family not in (ROOT / "atoken" / "cli" / "data.py").read_text().lower()


@pytest.mark.parametrize(("name", "family", "plugin", "command"), FAMILY_IMPORTERS)
def test_without_a_familys_command_plugin_the_other_commands_work(
    fresh_plugins, name, family, plugin, command
):
    fresh_plugins.setenv("ATOKEN_DISABLE_PLUGINS", plugin)
    result = _run("data", "import", "--help")
    assert result.exit_code == 0 and "images" in result.output
    assert name not in result.output
    others = [other for other, *_ in FAMILY_IMPORTERS if other != name]
    assert others and all(other in result.output for other in others)
