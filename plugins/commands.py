"""Plugin commands: the ``register_commands`` hook adds ``atoken <command>`` (llm's hook).

:class:`PluginCommandGroup` is the class of the top-level ``atoken`` group. Each time it parses
a command line it builds itself: back to the commands written in code, then every loaded
plugin's ``register_commands(cli=group)``, one plugin at a time in loading order (the
built-ins of ``DEFAULT_PLUGINS``, then entry points). A plugin's hook receives the real group,
so a subcommand of an existing group is added through ``cli.commands`` (``atoken data import
meshes`` is the mesh family's, :mod:`atoken.modalities.mesh.cli`).

A plugin whose hook raises, or adds a command name that a command already has (names are
never replaced: a name in a script means one command), gets none of its commands in: what it
added is taken out again, a :class:`PluginCommandWarning` names it (and, for a taken name, the
plugin that holds it), and the other commands work. ``atoken plugins`` lists it as failed at
stage ``commands``.

Every command runs within :func:`~atoken.plugins.manager.skipping_broken_plugins`: a plugin
that fails to load is left out with a warning and the command goes on; if the command then
fails for want of a component, a modality or a checkpoint's plugin, its error names the
plugins left out (their error and the fix).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import click
import pluggy

from atoken.core.errors import (
    CheckpointError,
    ComponentError,
    DuplicateComponentError,
    UnknownModalityError,
)
from atoken.plugins.hookspecs import PROJECT_NAME
from atoken.plugins.manager import (
    PluginFailure,
    left_out_plugins,
    loaded_plugin_manager,
    plugin_distribution,
    skipping_broken_plugins,
)

__all__ = ["CORE_COMMANDS", "PluginCommandGroup", "PluginCommandWarning", "add_plugin_commands"]

#: The owner named for the commands written in atoken's own command line.
CORE_COMMANDS = "atoken.cli"

#: Every group of a command tree as (path below the top, group, its commands at that time).
_Snapshot = list[tuple[tuple[str, ...], click.Group, dict[str, click.Command]]]


class PluginCommandWarning(UserWarning):
    """A plugin's ``register_commands`` raised or reused a command name; its commands are not
    added (the message names the plugin, and the one that holds the name)."""


def _groups(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Group]]:
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _groups(command, (*path, name))


def _snapshot(cli: click.Group) -> _Snapshot:
    return [(path, group, dict(group.commands)) for path, group in _groups(cli)]


def _restore(snapshot: _Snapshot) -> None:
    for _, group, commands in snapshot:
        group.commands = dict(commands)


def _owner(path: tuple[str, ...], owners: dict[tuple[str, ...], str]) -> str:
    """The plugin that added the command at ``path`` (or a group above it)."""
    for end in range(len(path), 0, -1):
        if path[:end] in owners:
            return owners[path[:end]]
    return CORE_COMMANDS


def _taken(before: _Snapshot) -> tuple[str, ...] | None:
    """The path of the first command a plugin replaced or removed, if any."""
    for path, group, commands in before:
        for name, command in commands.items():
            if group.commands.get(name) is not command:
                return (*path, name)
    return None


def _failure(pm: pluggy.PluginManager, name: str, error: BaseException) -> PluginFailure:
    """Warn that plugin ``name`` added no commands because of ``error``; its failure record."""
    dist, version = plugin_distribution(name)
    if isinstance(error, DuplicateComponentError):  # names both plugins and the skip
        message = f"{error}; none of the commands of plugin {name!r} are added"
    else:
        message = (
            f"plugin {name!r} from distribution {dist!r}: its register_commands hook raised "
            f"{type(error).__name__}: {error}; none of its commands are added (skip it with "
            f"ATOKEN_DISABLE_PLUGINS={name})"
        )
    warnings.warn(message, PluginCommandWarning, stacklevel=2)
    hooks = tuple(sorted(h.name for h in pm.get_hookcallers(pm.get_plugin(name)) or ()))
    return PluginFailure(name, dist, version, "commands", error, hooks)


def add_plugin_commands(
    cli: click.Group, pm: pluggy.PluginManager, skip: Sequence[str] = ()
) -> tuple[PluginFailure, ...]:
    """Call each plugin's ``register_commands(cli=cli)`` but those named in ``skip``; return
    the plugins whose hook failed (warned about, none of their commands added)."""
    owners: dict[tuple[str, ...], str] = {}
    failures = []
    for impl in pm.hook.register_commands.get_hookimpls():  # loading order
        name = impl.plugin_name
        if name in skip:
            continue
        before = _snapshot(cli)
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        try:
            pm.subset_hook_caller("register_commands", remove_plugins=others)(cli=cli)
            taken = _taken(before)
            if taken is not None:
                command = " ".join((PROJECT_NAME, *taken))
                raise DuplicateComponentError("command", command, _owner(taken, owners), name)
        except (Exception, SystemExit) as exc:  # a plugin's sys.exit is named too
            _restore(before)
            failures.append(_failure(pm, name, exc))
            continue
        for path, group, commands in before:
            owners.update({(*path, new): name for new in group.commands.keys() - commands})
    return tuple(failures)


class PluginCommandGroup(click.Group):
    """A click group that plugins add commands to (``register_commands``) before it parses.

    Its own commands are those it holds when first built. ``plugin_failures`` holds the
    plugins whose hook failed the last time it was built.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_failures: tuple[PluginFailure, ...] = ()
        self._own: _Snapshot | None = None

    def build(self) -> tuple[PluginFailure, ...]:
        """Back to the commands written in code, then the plugins' (the loaded plugins may
        have changed since the last build: a test registers one). Returns the failures."""
        if self._own is None:
            self._own = _snapshot(self)
        _restore(self._own)
        pm, failures = loaded_plugin_manager()  # failing to load is diagnose_plugins' to tell
        self.plugin_failures = add_plugin_commands(self, pm, skip=[f.name for f in failures])
        return self.plugin_failures

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        self.build()
        return super().parse_args(ctx, args)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line leaving broken plugins out (each named in a warning)."""
        with skipping_broken_plugins():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        """Invoke the command; when it fails for want of a component or a checkpoint's plugin
        while a plugin was left out, its error names that plugin, its error and the fix."""
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            note = _left_out_note(exc)
            if note:
                exc.message = f"{exc.message}\n{note}"
            raise
        except Exception as exc:  # a typed error no command turned into a click error
            note = _left_out_note(exc)
            if note:
                exc.add_note(note)
            raise


def _missing_something(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an error it was raised from says a component, a modality or a
    checkpoint's plugin is missing (what a plugin that failed to load might have provided)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ComponentError, UnknownModalityError, CheckpointError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _left_out_note(exc: BaseException) -> str:
    """The plugins left out, for the error of a command that may have needed them."""
    failures = left_out_plugins()
    if not failures or not _missing_something(exc):
        return ""
    text = str(exc)
    needed = [f for f in failures if repr(f.name) in text or repr(f.distribution) in text]
    why = "this needs it" if needed else "it may provide what is missing"
    return "\n".join(f"{f.describe()} and was left out; {why}: {f.fix}" for f in needed or failures)
