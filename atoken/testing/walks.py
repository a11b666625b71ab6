"""Walk figures: how far a call wanders through the source folders.

A *walk* is every Python call made while a function runs. :func:`trace_walk` records the
distinct caller -> callee edges between functions of this repository (calls through torch,
attrs or any other library are followed back to the nearest repository frame, so
``model(x)`` counts as an edge to ``forward``). Property reads are left out. The figures:

* ``crossings``: edges whose caller and callee live in different source folders
  (``core``, ``atoken``, ``modalities``, ``losses``, ``plugins``);
* ``private``: edges into a ``_name`` function of another module;
* ``upward``: edges from ``core/`` into ``atoken/`` (the core calling back up).

    walk = trace_walk(lambda: tok.decode(tok.encode([img])))
    assert len(walk.crossings) <= 12, walk.report()
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import attrs

__all__ = ["Edge", "Walk", "trace_walk"]

#: The repository's root (this file is atoken/testing/walks.py).
ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("core", "atoken", "modalities", "losses", "plugins")


@attrs.frozen
class Edge:
    """One caller -> callee edge: ``folder/module.py:function`` on each side."""

    caller: str
    callee: str
    caller_folder: str
    callee_folder: str
    caller_module: str
    callee_module: str
    callee_name: str

    def __str__(self) -> str:
        return f"{self.caller} -> {self.callee}"


@attrs.frozen
class Walk:
    """The distinct edges one traced call made (:func:`trace_walk`)."""

    edges: frozenset[Edge]

    @property
    def crossings(self) -> list[Edge]:
        """Edges whose caller and callee are in different source folders."""
        return sorted((e for e in self.edges if e.caller_folder != e.callee_folder), key=str)

    @property
    def private(self) -> list[Edge]:
        """Edges into a private (``_name``, not dunder) function of another module."""
        return sorted(
            (
                e
                for e in self.edges
                if e.caller_module != e.callee_module
                and e.callee_name.startswith("_")
                and not e.callee_name.startswith("__")
            ),
            key=str,
        )

    @property
    def upward(self) -> list[Edge]:
        """Edges from ``core/`` into ``atoken/``."""
        return sorted(
            (e for e in self.edges if e.caller_folder == "core" and e.callee_folder == "atoken"),
            key=str,
        )

    def report(self) -> str:
        """The figures and the edges behind them, for an assertion message."""
        lines = [
            f"{len(self.edges)} edges, {len(self.crossings)} crossings, "
            f"{len(self.private)} private across modules, {len(self.upward)} core -> atoken"
        ]
        lines += [f"  crossing: {e}" for e in self.crossings]
        lines += [f"  private:  {e}" for e in self.private]
        return "\n".join(lines)


def _place(code: CodeType) -> tuple[str, str] | None:
    """(folder, module path) of a code object of this repository, else None."""
    try:
        rel = Path(code.co_filename).resolve().relative_to(ROOT)
    except ValueError:
        return None
    if not rel.parts or rel.parts[0] not in FOLDERS:
        return None
    return rel.parts[0], rel.as_posix()


def _property_codes() -> set[CodeType]:
    """The code objects of every property getter of the repository's loaded classes."""
    codes: set[CodeType] = set()
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if not name.startswith("atoken"):
            continue
        for value in list(vars(module).values()):
            if not inspect.isclass(value):
                continue
            for attr in vars(value).values():
                if isinstance(attr, property) and attr.fget is not None:
                    code = getattr(attr.fget, "__code__", None)
                    if code is not None:
                        codes.add(code)
    return codes


def trace_walk(fn: Callable[[], Any]) -> Walk:
    """Run ``fn()`` once under a profiler and return its :class:`Walk` (this thread only)."""
    skip = _property_codes()
    places: dict[CodeType, tuple[str, str] | None] = {}
    edges: set[Edge] = set()

    def place(code: CodeType) -> tuple[str, str] | None:
        if code not in places:
            places[code] = _place(code)
        return places[code]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        callee = place(code)
        if callee is None or code in skip or code.co_name.startswith("<"):
            return
        back = frame.f_back
        while back is not None and (place(back.f_code) is None or back.f_code.co_name[0] == "<"):
            back = back.f_back
        if back is None or back.f_code is trace_walk.__code__:  # the traced call itself
            return
        caller = place(back.f_code)
        assert caller is not None
        edges.add(
            Edge(
                caller=f"{caller[1]}:{back.f_code.co_qualname}",
                callee=f"{callee[1]}:{code.co_qualname}",
                caller_folder=caller[0],
                callee_folder=callee[0],
                caller_module=caller[1],
                callee_module=callee[1],
                callee_name=code.co_name,
            )
        )

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(previous)
    return Walk(frozenset(edges))
