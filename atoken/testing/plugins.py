"""Isolation helpers for tests that register throwaway plugins."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from atoken.plugins.manager import get_plugin_manager, refresh

__all__ = ["registered_plugin"]


@contextmanager
def registered_plugin(plugin: object, name: str) -> Iterator[object]:
    """Register ``plugin`` under ``name`` for the duration of a ``with`` block.

    The registries are rebuilt on entry and on exit, and the plugin is unregistered in
    ``finally`` even if the block raises, so no test leaks components into another.
    """
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    refresh()
    try:
        yield plugin
    finally:
        pm.unregister(name=name)
        refresh()
