"""Typed component registries: one per kind, filled by the plugin layer.

A registry maps a component name to a factory (a class or a function) and remembers which
plugin registered it. It knows nothing of pluggy: ``atoken.plugins`` fills it through the
``register_<kind>s`` hooks, and the core receives a filled registry from its caller.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import attrs

from atoken.core.errors import DuplicateComponentError, UnknownComponentError

__all__ = ["KINDS", "Registries", "Registry", "RegistryEntry"]

T = TypeVar("T")

#: The component kinds, as (registry attribute, singular name used in messages).
KINDS: tuple[tuple[str, str], ...] = (
    ("modalities", "modality"),
    ("bottlenecks", "bottleneck"),
    ("heads", "head"),
    ("losses", "loss"),
    ("attention_backends", "attention backend"),
    ("metrics", "metric"),
    ("text_encoders", "text encoder"),
    ("tasks", "task"),
    ("data_sources", "data source"),
    ("stage_transforms", "stage transform"),
    ("renderers", "renderer"),
)


@attrs.frozen
class RegistryEntry(Generic[T]):
    """One registered component: its name, factory and the plugin that registered it."""

    name: str
    factory: Callable[..., T]
    plugin: str


class Registry(Generic[T]):
    """Components of one kind, by name.

    Args:
        kind: the singular kind name used in error messages (e.g. ``"modality"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}

    def add(self, name: str, factory: Callable[..., T], *, plugin: str) -> None:
        """Register ``factory`` under ``name`` on behalf of ``plugin``.

        Raises:
            DuplicateComponentError: the name is already taken (naming both plugins).
            TypeError: the name is not a non-empty string or the factory is not callable.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} from plugin {plugin!r}: factory is not callable")
        if name in self._entries:
            raise DuplicateComponentError(self.kind, name, self._entries[name].plugin, plugin)
        self._entries[name] = RegistryEntry(name, factory, plugin)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entry(self, name: str) -> RegistryEntry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = self.names()
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            raise UnknownComponentError(self.kind, str(name), known, close) from None

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``; raises ``UnknownComponentError``."""
        return self.entry(name).factory

    def create(self, name: str, **params: Any) -> T:
        """Build the component: ``get(name)(**params)``."""
        return self.get(name)(**params)

    def plugin_of(self, name: str) -> str:
        """The name of the plugin that registered ``name``."""
        return self.entry(name).plugin

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


@attrs.frozen(kw_only=True)
class Registries:
    """All component registries, one attribute per kind."""

    modalities: Registry[Any] = attrs.field(factory=lambda: Registry("modality"))
    bottlenecks: Registry[Any] = attrs.field(factory=lambda: Registry("bottleneck"))
    heads: Registry[Any] = attrs.field(factory=lambda: Registry("head"))
    losses: Registry[Any] = attrs.field(factory=lambda: Registry("loss"))
    attention_backends: Registry[Any] = attrs.field(factory=lambda: Registry("attention backend"))
    metrics: Registry[Any] = attrs.field(factory=lambda: Registry("metric"))
    text_encoders: Registry[Any] = attrs.field(factory=lambda: Registry("text encoder"))
    tasks: Registry[Any] = attrs.field(factory=lambda: Registry("task"))
    data_sources: Registry[Any] = attrs.field(factory=lambda: Registry("data source"))
    stage_transforms: Registry[Any] = attrs.field(factory=lambda: Registry("stage transform"))
    renderers: Registry[Any] = attrs.field(factory=lambda: Registry("renderer"))

    def by_kind(self) -> dict[str, Registry[Any]]:
        """``{"modalities": Registry, ...}`` in the order of :data:`KINDS`."""
        return {attr: getattr(self, attr) for attr, _ in KINDS}
