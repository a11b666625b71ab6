"""The top-level ``atoken`` click group, without its commands (:mod:`atoken.cli` adds them).

Plugins add commands through the ``register_commands`` hook when it is built (``main`` is a
:class:`atoken.plugins.commands.PluginCommandGroup`): ``atoken data import meshes`` is one. It
is its own module so that a command module that needs the group (``atoken plugins`` reports the
plugins whose commands failed) imports it without importing the package that adds the commands.
"""

from __future__ import annotations

import click

import atoken
from atoken.plugins.commands import PluginCommandGroup

__all__ = ["main"]


@click.group(cls=PluginCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(atoken.__version__, prog_name="atoken")
def main() -> None:
    """atoken: a unified, plugin-based vision tokenizer."""
