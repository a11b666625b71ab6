"""``atoken.plugins.command_kit``: a third party's importer built from the kit reads and fails
like the built-in ones, run through ``atoken`` itself."""

from __future__ import annotations

import attrs
import click
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.core.errors import StoreError
from atoken.plugins.command_kit import (
    echo_import,
    fail,
    parse_storage_options,
    storage_option,
    wait_option,
)
from atoken.testing import registered_plugin


@attrs.frozen
class Report:
    added: int
    already_stored: int
    committed: int
    bad: tuple[tuple[str, str], ...]


class Points:
    """``atoken data import points SRC... DST``: fails on a source named ``locked``."""

    @atoken.hookimpl
    def register_commands(self, cli):
        @click.command(name="points")
        @click.argument("paths", nargs=-1, required=True)
        @storage_option
        @wait_option
        def points(paths, storage_options, wait):
            *srcs, dst = paths
            options = parse_storage_options(storage_options)
            try:
                if "locked" in srcs:
                    raise StoreError(f"held by a writer (waited {wait} s)", store=dst)
            except StoreError as exc:
                raise fail(exc) from exc
            click.echo(f"options {sorted(options)}")
            report = Report(len(srcs) - 1, 2, len(srcs) + 1, (("b.ply", "empty"),))
            echo_import(report, "clouds", dst)

        cli.commands["data"].commands["import"].add_command(points)


def _run(*args: str):
    with registered_plugin(Points(), name="points-kit"):
        return CliRunner().invoke(main, ["data", "import", "points", *args])


def test_an_importer_built_from_the_kit_reports_like_the_built_in_ones():
    result = _run("a.ply", "b.ply", "out.zarr", "--storage-options", '{"anon": true}')
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "options ['anon']",
        "imported 1 clouds into out.zarr (2 already stored); the store holds 3 samples",
        "skipped b.ply: empty",
    ]


def test_a_typed_error_is_a_one_line_failure_naming_its_type():
    result = _run("locked", "out.zarr", "--wait", "1.5")
    assert result.exit_code == 1
    assert "Error: StoreError: store 'out.zarr': held by a writer (waited 1.5 s)\n" in result.output
    assert "Traceback" not in result.output


def test_bad_storage_options_and_a_negative_wait_are_usage_errors():
    for args, culprit in [
        (("--storage-options", "{not json"), "--storage-options"),
        (("--storage-options", "[1, 2]"), "--storage-options"),
        (("--wait", "-1"), "--wait"),
    ]:
        result = _run("a.ply", "out.zarr", *args)
        assert result.exit_code == 2, result.output
        assert culprit in result.output
