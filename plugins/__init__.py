"""The plugin layer of atoken: pluggy hooks, the manager and the registries it fills."""

from atoken.plugins.hookspecs import hookimpl, hookspec
from atoken.plugins.manager import (
    DEFAULT_PLUGINS,
    PluginDiagnosis,
    PluginFailure,
    PluginInfo,
    diagnose_plugins,
    disabled_plugins,
    get_plugin_manager,
    get_registry,
    list_plugins,
    refresh,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "PluginDiagnosis",
    "PluginFailure",
    "PluginInfo",
    "diagnose_plugins",
    "disabled_plugins",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "hookspec",
    "list_plugins",
    "refresh",
]
