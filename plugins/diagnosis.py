"""What loading the plugins found: the plugins that loaded, those that failed and why.

:mod:`atoken.plugins.manager` makes these records (and re-exports them); ``atoken plugins``
lists them, and a command that goes on without a broken plugin names it through them.
"""

from __future__ import annotations

from typing import Literal

import attrs

from atoken.core.registry import Registries

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "BrokenPluginWarning",
    "LoadStage",
    "PluginDiagnosis",
    "PluginFailure",
    "PluginInfo",
]

#: The distribution named for atoken's own plugins.
BUILTIN_DISTRIBUTION = "atoken"

#: Where loading a plugin failed: importing it (or loading its entry point), pluggy validating
#: its hooks (an unknown hook name, a bad signature), running its ``register_<kind>s`` hooks
#: (the hook raised, or registered a name another plugin already holds), or running its
#: ``register_commands`` hook (:mod:`atoken.plugins.commands`; its components still load).
LoadStage = Literal["import", "validate", "register", "commands"]


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its name, distribution, version and the hooks it implements."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


@attrs.frozen
class PluginFailure:
    """A plugin that failed to load: who it is, at which :data:`LoadStage`, and the error.

    ``error`` is the original exception (what :class:`PluginLoadError` chains as its cause);
    ``hooks`` are the hooks it implements, empty when it could not even be imported.
    """

    name: str
    distribution: str
    version: str
    stage: LoadStage
    error: BaseException = attrs.field(eq=False)
    hooks: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """``"<ErrorType>: <message>"``, as :class:`PluginLoadError` words it."""
        return f"{type(self.error).__name__}: {self.error}"

    @property
    def fix(self) -> str:
        """The ways on: fix or uninstall it, or skip it (``ATOKEN_DISABLE_PLUGINS``)."""
        third_party = self.distribution not in (BUILTIN_DISTRIBUTION, "unknown")
        uninstall = f" (pip uninstall {self.distribution})" if third_party else ""
        return f"fix or uninstall it{uninstall}, or skip it with ATOKEN_DISABLE_PLUGINS={self.name}"

    def describe(self) -> str:
        """``plugin 'x' from distribution 'd' failed to load (at <stage>: <error>)``."""
        return (
            f"plugin {self.name!r} from distribution {self.distribution!r} failed to load "
            f"(at {self.stage}: {self.message})"
        )


class BrokenPluginWarning(UserWarning):
    """A plugin failed to load and was left out
    (:func:`~atoken.plugins.manager.skipping_broken_plugins`); the message names it, its error
    and the fix."""


@attrs.frozen
class PluginDiagnosis:
    """What :func:`~atoken.plugins.manager.diagnose_plugins` found: the plugins that loaded,
    the registries they filled, and every plugin that failed (none of its components are in
    ``registries``)."""

    plugins: tuple[PluginInfo, ...]
    failures: tuple[PluginFailure, ...]
    registries: Registries

    @property
    def ok(self) -> bool:
        """True when every plugin loaded."""
        return not self.failures
