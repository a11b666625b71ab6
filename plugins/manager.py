"""The plugin manager and the registries it fills.

Loading order: the built-in plugins listed in :data:`DEFAULT_PLUGINS`, then every installed
entry point of the group ``atoken``, then ``check_pending()`` so a misspelt hook name is an
error rather than silence. Nothing loads at import time: the manager and the registries are
built on first use and cached until :func:`refresh`.

Environment:
    ATOKEN_DISABLE_PLUGINS  comma list of plugin or distribution names that are not loaded.
    ATOKEN_TRACE_PLUGINS=1  trace every hook call to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import sys
import threading
from typing import Any

import attrs
import pluggy

from atoken.core.errors import ComponentError, PluginLoadError
from atoken.core.registry import KINDS, Registries
from atoken.plugins import hookspecs

__all__ = [
    "DEFAULT_PLUGINS",
    "PluginInfo",
    "disabled_plugins",
    "get_plugin_manager",
    "get_registry",
    "list_plugins",
    "refresh",
]

#: Built-in plugins: modules registered through the same hooks as third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "atoken.modalities.image",
    "atoken.modalities.video",
    "atoken.plugins.attention",
    "atoken.plugins.bottlenecks.kl",
    "atoken.plugins.bottlenecks.fsq",
    "atoken.plugins.heads",
    "atoken.losses.l1",
    "atoken.losses.mse",
    "atoken.losses.lpips",
    "atoken.losses.gram",
    "atoken.losses.clip",
    "atoken.losses.kl",
    "atoken.plugins.metrics.pixel",
    "atoken.plugins.metrics.perceptual",
    "atoken.plugins.metrics.video",
    "atoken.plugins.metrics.semantic",
    "atoken.plugins.text_encoders.minilm",
    "atoken.plugins.text_encoders.open_clip",
    "atoken.losses.siglip",
    "atoken.losses.distill",
)

_BUILTIN_DIST = "atoken"
_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_registry: Registries | None = None
_distinfo: dict[str, tuple[str, str]] = {}


@attrs.frozen
class PluginInfo:
    """A loaded plugin: its name, distribution, version and the hooks it implements."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


def disabled_plugins() -> frozenset[str]:
    """Names listed in ``ATOKEN_DISABLE_PLUGINS`` (plugin or distribution names)."""
    raw = os.environ.get("ATOKEN_DISABLE_PLUGINS", "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _register(pm: pluggy.PluginManager, plugin: object, name: str, dist: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(name, dist, exc) from exc
    _distinfo[name] = (dist, _version(dist))


def _build_manager(load_entrypoints: bool) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("ATOKEN_TRACE_PLUGINS", "") not in ("", "0"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    blocked = disabled_plugins()
    _distinfo.clear()
    for modname in DEFAULT_PLUGINS:
        if modname in blocked:
            pm.set_blocked(modname)
            continue
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            raise PluginLoadError(modname, _BUILTIN_DIST, exc) from exc
        _register(pm, module, modname, _BUILTIN_DIST)
    if load_entrypoints:
        for ep in metadata.entry_points(group=hookspecs.PROJECT_NAME):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            if ep.name in blocked or dist in blocked:
                pm.set_blocked(ep.name)
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(ep.name, dist, exc) from exc
            _register(pm, plugin, ep.name, dist)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginLoadError(name, _distinfo.get(name, ("unknown",))[0], exc) from exc
    return pm


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first call.

    Raises:
        PluginLoadError: a plugin failed to import or implements an unknown hook.
    """
    global _manager
    with _lock:
        if _manager is None:
            _manager = _build_manager(load_entrypoints)
        return _manager


def _call_registration_hook(
    pm: pluggy.PluginManager, hook_name: str, registries: Registries, attr: str
) -> None:
    registry = getattr(registries, attr)
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        plugin_name = impl.plugin_name

        def register(name: str, factory: Any, _plugin: str = plugin_name) -> None:
            registry.add(name, factory, plugin=_plugin)

        try:
            pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
        except ComponentError:
            raise
        except Exception as exc:
            dist = _distinfo.get(plugin_name, ("unknown",))[0]
            raise PluginLoadError(plugin_name, dist, exc) from exc


def get_registry() -> Registries:
    """The typed registries (``.modalities``, ``.bottlenecks``, ``.heads``, ``.losses``,
    ``.attention_backends``, ``.metrics``, ``.text_encoders``), filled from every loaded
    plugin on first call.

    Raises:
        DuplicateComponentError: two plugins registered one name (both are named).
        PluginLoadError: a plugin failed to load or its registration hook raised.
    """
    global _registry
    with _lock:
        if _registry is None:
            pm = get_plugin_manager()
            registries = Registries()
            for attr, _ in KINDS:
                _call_registration_hook(pm, f"register_{attr}", registries, attr)
            _registry = registries
        return _registry


def refresh(*, manager: bool = False) -> None:
    """Forget the cached registries (and, with ``manager=True``, the plugin manager too)."""
    global _manager, _registry
    with _lock:
        _registry = None
        if manager:
            _manager = None


def list_plugins() -> list[PluginInfo]:
    """Every loaded plugin with its distribution, version and implemented hooks."""
    pm = get_plugin_manager()
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue  # blocked
        dist, version = _distinfo.get(name, ("unknown", "unknown"))
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        out.append(PluginInfo(name, dist, version, hooks))
    return out
