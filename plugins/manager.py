"""The plugin manager and the registries it fills.

Loading order: the built-in plugins listed in :data:`DEFAULT_PLUGINS`, then every installed
entry point of the group ``atoken``, then ``check_pending()`` so a misspelt hook name is an
error rather than silence. Nothing loads at import time: the manager and the registries are
built on first use and cached until :func:`refresh`.

:func:`get_registry` raises on the first plugin that fails to load; :func:`diagnose_plugins`
(behind ``atoken plugins``) loads what it can and returns every failure instead. Within
:func:`skipping_broken_plugins` (every ``atoken`` command runs in it) a plugin that fails is left
out with a :class:`BrokenPluginWarning` naming it and the fix, and the rest loads.

Environment:
    ATOKEN_DISABLE_PLUGINS  comma list of plugin or distribution names that are not loaded
                            (a name no plugin has is a warning with close matches).
    ATOKEN_TRACE_PLUGINS=1  print ``atoken: hook <hook> -> <plugin>`` to stderr for every hook
                            implementation called.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pluggy

from atoken.core.errors import DuplicateComponentError, PluginLoadError
from atoken.core.registry import KINDS, Registries
from atoken.plugins import hookspecs
from atoken.plugins.builtin import DEFAULT_PLUGINS, PLUGIN_MODULES
from atoken.plugins.diagnosis import (
    BUILTIN_DISTRIBUTION,
    BrokenPluginWarning,
    LoadStage,
    PluginDiagnosis,
    PluginFailure,
    PluginInfo,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "PLUGIN_MODULES",
    "BrokenPluginWarning",
    "LoadStage",
    "PluginDiagnosis",
    "PluginFailure",
    "PluginInfo",
    "diagnose_plugins",
    "disabled_plugins",
    "get_plugin_manager",
    "get_registry",
    "left_out_plugins",
    "list_plugins",
    "loaded_plugin_manager",
    "plugin_distribution",
    "refresh",
    "skipping_broken_plugins",
]

_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_registry: Registries | None = None
_distinfo: dict[str, tuple[str, str]] = {}
#: Inside :func:`skipping_broken_plugins`: leave a broken plugin out instead of raising.
_skip_broken = False
#: Plugins the cached manager was built without (only ever inside skipping_broken_plugins).
_manager_failures: tuple[PluginFailure, ...] = ()
#: Plugins left out (and warned about) since skipping_broken_plugins was entered.
_left_out: tuple[PluginFailure, ...] = ()


def disabled_plugins() -> frozenset[str]:
    """Names listed in ``ATOKEN_DISABLE_PLUGINS`` (plugin or distribution names)."""
    raw = os.environ.get("ATOKEN_DISABLE_PLUGINS", "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _dist_of(name: str) -> str:
    return _distinfo.get(name, ("unknown",))[0]


def plugin_distribution(name: str) -> tuple[str, str]:
    """The distribution and version the loaded plugin ``name`` comes from (``("unknown",
    "unknown")`` for a plugin registered in-process)."""
    return _distinfo.get(name, ("unknown", "unknown"))


def _load_error(name: str, dist: str, cause: BaseException) -> PluginLoadError:
    """A :class:`PluginLoadError` chained to ``cause`` (its message says how to skip it)."""
    err = PluginLoadError(name, dist, cause)
    err.__cause__ = cause
    return err


#: Collects failures while loading; ``None`` means "raise on the first one".
_Failures = list[PluginFailure] | None


def _fail(
    failures: _Failures,
    name: str,
    dist: str,
    stage: LoadStage,
    exc: BaseException,
    hooks: Sequence[str] = (),
) -> None:
    if failures is None:
        raise _load_error(name, dist, exc)
    failures.append(PluginFailure(name, dist, _version(dist), stage, exc, tuple(hooks)))


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    return tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))


def _register(
    pm: pluggy.PluginManager, plugin: object, name: str, dist: str, failures: _Failures
) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        _fail(failures, name, dist, "validate", exc)
        if pm.get_plugin(name) is not None:  # pluggy < 1.7 keeps the hooks it accepted first
            pm.unregister(name=name)
        return
    _distinfo[name] = (dist, _version(dist))


def _unknown_hooks(pm: pluggy.PluginManager) -> dict[str, pluggy.PluginValidationError]:
    """``check_pending()`` without stopping at the first offender: plugin name -> error."""
    found: dict[str, pluggy.PluginValidationError] = {}
    for hook_name, caller in vars(pm.hook).items():
        if hook_name.startswith("_") or caller.has_spec():
            continue
        specs = [n for n, c in vars(pm.hook).items() if not n.startswith("_") and c.has_spec()]
        close = difflib.get_close_matches(hook_name, sorted(specs), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        for impl in caller.get_hookimpls():
            if not impl.optionalhook and impl.plugin_name not in found:
                found[impl.plugin_name] = pluggy.PluginValidationError(
                    impl.plugin, f"unknown hook {hook_name!r} in plugin {impl.plugin_name!r}{hint}"
                )
    return found


def _trace_hook_calls(pm: pluggy.PluginManager) -> None:
    """Print ``atoken: hook <hook> -> <plugin>`` for each implementation, in call order."""

    def before(
        hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, object]
    ) -> None:
        for impl in reversed(impls):  # pluggy calls the last registered first
            print(f"atoken: hook {hook_name} -> {impl.plugin_name}", file=sys.stderr)

    def after(
        outcome: pluggy.Result[object],
        hook_name: str,
        impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, object],
    ) -> None:
        if outcome.exception is not None:
            exc = outcome.exception
            print(f"atoken: hook {hook_name} raised {type(exc).__name__}: {exc}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def _warn_unknown_disabled(blocked: frozenset[str], known: set[str] | None) -> None:
    """Warn, with close matches, about ``ATOKEN_DISABLE_PLUGINS`` names no plugin has (a typo
    there would otherwise leave the plugin loaded in silence)."""
    if known is None:
        return
    for name in sorted(blocked - known):
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        warnings.warn(
            f"ATOKEN_DISABLE_PLUGINS names {name!r}, which is no installed plugin or "
            f"distribution{hint}",
            stacklevel=3,
        )


def _build_manager(load_entrypoints: bool, failures: _Failures = None) -> pluggy.PluginManager:
    """Load every plugin. With ``failures`` a list, a plugin that fails is recorded there and
    left out; without, the first failure raises :class:`PluginLoadError`."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("ATOKEN_TRACE_PLUGINS", "") not in ("", "0"):
        _trace_hook_calls(pm)
    blocked = disabled_plugins()
    _distinfo.clear()
    for modname in DEFAULT_PLUGINS:
        if modname in blocked:
            pm.set_blocked(modname)
            continue
        try:
            module = importlib.import_module(PLUGIN_MODULES.get(modname, modname))
        except (Exception, SystemExit) as exc:  # a plugin's sys.exit is named too
            _fail(failures, modname, BUILTIN_DISTRIBUTION, "import", exc)
            continue
        _register(pm, module, modname, BUILTIN_DISTRIBUTION, failures)
    known = set(DEFAULT_PLUGINS)
    if load_entrypoints:
        for ep in metadata.entry_points(group=hookspecs.PROJECT_NAME):
            known.update((ep.name, ep.dist.name if ep.dist is not None else ep.name))
            dist = ep.dist.name if ep.dist is not None else "unknown"
            if ep.name in blocked or dist in blocked:
                pm.set_blocked(ep.name)
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # a plugin's sys.exit is named too
                _fail(failures, ep.name, dist, "import", exc)
                continue
            _register(pm, plugin, ep.name, dist, failures)
    _warn_unknown_disabled(blocked, known if load_entrypoints else None)
    for name, exc in _unknown_hooks(pm).items():
        hooks = _hook_names(pm, pm.get_plugin(name))
        _fail(failures, name, _dist_of(name), "validate", exc, hooks)
        pm.unregister(name=name)
    return pm


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first call.

    Raises:
        PluginLoadError: a plugin failed to import or implements an unknown hook (within
            :func:`skipping_broken_plugins`: it is left out with a warning instead).
    """
    global _manager, _manager_failures
    with _lock:
        if _manager is None and _skip_broken:
            failures: list[PluginFailure] = []
            _manager = _build_manager(load_entrypoints, failures)
            _manager_failures = tuple(failures)
            _leave_out(failures)
        elif _manager is None:
            _manager = _build_manager(load_entrypoints)
        return _manager


def _call_registration_hook(
    pm: pluggy.PluginManager,
    hook_name: str,
    registries: Registries,
    attr: str,
    skip: frozenset[str],
) -> None:
    registry = getattr(registries, attr)
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():
        plugin_name = impl.plugin_name
        if plugin_name in skip:
            continue
        others = [p for p in pm.get_plugins() if p is not impl.plugin]

        def register(name: str, factory: Any, _plugin: str = plugin_name) -> None:
            registry.add(name, factory, plugin=_plugin)

        try:
            pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
        except DuplicateComponentError:
            raise  # names both plugins already
        except (Exception, SystemExit) as exc:  # a plugin's sys.exit is named too
            raise _load_error(plugin_name, _dist_of(plugin_name), exc) from exc


def _fill_registries(pm: pluggy.PluginManager, skip: frozenset[str] = frozenset()) -> Registries:
    registries = Registries()
    for attr, _ in KINDS:
        _call_registration_hook(pm, f"register_{attr}", registries, attr, skip)
    return registries


def get_registry() -> Registries:
    """The typed registries (``.modalities``, ``.bottlenecks``, ``.heads``, ``.losses``,
    ``.attention_backends``, ``.metrics``, ``.text_encoders``), filled from every loaded
    plugin on first call.

    Raises:
        DuplicateComponentError: two plugins registered one name (both are named).
        PluginLoadError: a plugin failed to load or its registration hook raised (the message
            names the plugin, its distribution and the ``ATOKEN_DISABLE_PLUGINS`` to skip it).
            Within :func:`skipping_broken_plugins` neither: the plugin is left out, warned of.
    """
    global _registry
    with _lock:
        if _registry is None and _skip_broken:
            diagnosis = diagnose_plugins()
            _leave_out(diagnosis.failures)
            _registry = diagnosis.registries
        elif _registry is None:
            _registry = _fill_registries(get_plugin_manager())
        return _registry


def refresh(*, manager: bool = False) -> None:
    """Forget the cached registries (and, with ``manager=True``, the plugin manager too)."""
    global _manager, _manager_failures, _registry
    with _lock:
        _registry = None
        if manager:
            _manager, _manager_failures = None, ()


def _plugin_infos(pm: pluggy.PluginManager, skip: frozenset[str]) -> list[PluginInfo]:
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or name in skip:
            continue  # blocked, or failed
        dist, version = _distinfo.get(name, ("unknown", "unknown"))
        out.append(PluginInfo(name, dist, version, _hook_names(pm, plugin)))
    return out


def list_plugins() -> list[PluginInfo]:
    """Every loaded plugin with its distribution, version and implemented hooks."""
    return _plugin_infos(get_plugin_manager(), frozenset())


def loaded_plugin_manager(
    load_entrypoints: bool = True,
) -> tuple[pluggy.PluginManager, list[PluginFailure]]:
    """A manager of every plugin that loads, and the plugins that failed to import or validate.

    The process-wide manager when it builds, else a separate one without the plugins that
    fail. The failures also name plugins registered in-process since the build that implement
    an unknown hook (they stay registered: skip them). Never raises for a broken plugin, so
    :func:`diagnose_plugins` and the command line (:mod:`atoken.plugins.commands`) use it.
    """
    failures: list[PluginFailure] = []
    with _lock:
        try:
            pm = get_plugin_manager(load_entrypoints)
            failures.extend(_manager_failures)
        except PluginLoadError:
            pm = _build_manager(load_entrypoints, failures)
        for name, exc in _unknown_hooks(pm).items():  # registered after the manager was built
            hooks = _hook_names(pm, pm.get_plugin(name))
            _fail(failures, name, _dist_of(name), "validate", exc, hooks)
    return pm, failures


def diagnose_plugins(load_entrypoints: bool = True) -> PluginDiagnosis:
    """Load every plugin that can be loaded and report the others instead of raising.

    Uses the process-wide manager when it builds (so plugins added with
    :func:`atoken.testing.registered_plugin` count), else a separate one that leaves out each
    plugin that fails to import or to validate. Registration hooks then run on every remaining
    plugin; one that raises, or registers a name an earlier plugin holds, is a failure too and
    none of its components are kept. The cached registries are not changed.
    """
    with _lock:
        pm, failures = loaded_plugin_manager(load_entrypoints)
        while True:  # each pass leaves out one more failing plugin, so this ends
            skip = frozenset(f.name for f in failures)
            try:
                registries = _fill_registries(pm, skip)
            except PluginLoadError as err:
                name, cause = err.plugin, err.__cause__ or err
            except DuplicateComponentError as err:
                name, cause = err.plugins[1], err
            else:
                break
            hooks = _hook_names(pm, pm.get_plugin(name))
            _fail(failures, name, _dist_of(name), "register", cause, hooks)
        plugins = _plugin_infos(pm, skip)
    return PluginDiagnosis(tuple(plugins), tuple(failures), registries)


def _leave_out(failures: Sequence[PluginFailure]) -> None:
    """Warn once of each plugin in ``failures`` that is left out from now on."""
    global _left_out
    for failure in failures:
        if failure.name not in {f.name for f in _left_out}:
            _left_out = (*_left_out, failure)
            warnings.warn(
                f"{failure.describe()} and is left out: {failure.fix}",
                BrokenPluginWarning,
                stacklevel=3,
            )


def left_out_plugins() -> tuple[PluginFailure, ...]:
    """The plugins left out since :func:`skipping_broken_plugins` was entered (warned of)."""
    return _left_out


@contextmanager
def skipping_broken_plugins() -> Iterator[None]:
    """Within this block a plugin that fails to load (import, validation or registration) is
    left out with a :class:`BrokenPluginWarning` naming it, its error and the fix, and the
    others load, instead of :func:`get_plugin_manager`/:func:`get_registry` raising
    :class:`PluginLoadError`. Every ``atoken`` command runs in it: a command that does not need
    the plugin goes on; one that does fails naming it (:func:`left_out_plugins`).

    On leaving, what was built without a plugin is forgotten, so code outside sees a broken
    plugin as an error again.
    """
    global _skip_broken, _manager, _manager_failures, _registry, _left_out
    with _lock:
        outer = _skip_broken
        _skip_broken = True
    try:
        yield
    finally:
        with _lock:
            _skip_broken = outer
            if not outer:
                if _left_out:
                    _registry = None
                if _manager_failures:
                    _manager, _manager_failures = None, ()
                _left_out = ()
