"""Key paths of a run file: close matches for a misspelt key, and dotted overrides.

    atoken train run.toml optim.lr=1e-4 distributed.strategy=fsdp tasks.0.data.batch_size=4

An override is ``KEY=VALUE``. ``KEY`` is a dotted path into the run file: a section and its
key (``optim.lr``, ``train.steps``), or an array of tables and an index (``tasks.0.data.
batch_size``, ``stages.1.optim.lr``, ``tasks.0.losses.1.weight``), then the keys of nested
tables. ``VALUE`` is a TOML value (``1e-4``, ``true``, ``[4, 4, 4]``, ``"fsdp"``,
``{ name = "l1" }``); text that is no TOML value is a string (``fsdp``). The overrides are
set, in order (a later one wins), into the parsed file before it is structured, so they are
typed and validated exactly as the file's keys are. A section, a section key, a stage key or
a stage's ``optim`` key that does not exist is a ``ConfigError`` with close matches; keys
inside ``[model]``, a task, its ``data`` table or a loss are checked where the file's are
(``[model]``, the task, the data source, the loss term).

    unknown_key("warmup_step", fields, "section [optim]")  -> ConfigError "did you mean ..."
    parse_override("optim.lr=1e-4")                         -> (("optim", "lr"), 0.0001)
    apply_overrides(data, ["optim.lr=1e-4"])                data, the overrides set
    overrides_note(["optim.lr=1e-4"])                       the comment run.toml ends with
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from atoken.core.errors import ConfigError
from atoken.engine.run_sections import (
    DistributedConfig,
    LogConfig,
    OptimConfig,
    RunSection,
    StageSpec,
    TrainConfig,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "OVERRIDE_ROOTS",
    "apply_overrides",
    "check_key_path",
    "overrides_note",
    "parse_override",
    "toml_value",
    "unknown_key",
]

#: The tables of a run file whose keys are their class's fields (None: any key, checked later).
_TABLES: dict[str, type | None] = {
    "run": RunSection,
    "model": None,  # tokenizer config keys: ModelConfig names a misspelt one
    "optim": OptimConfig,
    "train": TrainConfig,
    "distributed": DistributedConfig,
    "log": LogConfig,
}
#: The arrays of tables, and the class of one table (None: any key, checked by the task).
_ARRAYS: dict[str, type | None] = {"tasks": None, "stages": StageSpec}
#: What an override's key path may start with: every section and array of a run file.
OVERRIDE_ROOTS = (*_TABLES, *_ARRAYS)


def unknown_key(key: str, known: Iterable[str], where: str) -> ConfigError:
    """The error for ``key``, which is none of ``known``, in ``where`` (``"section
    [optim]"``): its close matches first, then every known key."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown key {key!r} in {where}{hint} (known keys: {', '.join(known)})")


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``"KEY=VALUE"`` -> (the key path, the value as TOML reads it, else the text).

    Raises:
        ConfigError: no ``=``, or an empty key or key part.
    """
    key, sep, raw = text.partition("=")
    path = tuple(part.strip() for part in key.split("."))
    if not sep or not all(path):
        raise ConfigError(
            f"override {text!r} is not KEY=VALUE with a dotted KEY (e.g. optim.lr=1e-4, "
            "tasks.0.data.batch_size=4)"
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: fsdp, cuda:0
    return path, value


def _fields(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)]


def check_key_path(path: Sequence[str]) -> None:
    """Check the keys of ``path`` that a run file fixes: the section or array, a section's
    key, a stage's key and a stage's ``optim`` key (indexes are checked against the file).

    Raises:
        ConfigError: a key that does not exist, with close matches.
    """
    root = path[0]
    if root not in OVERRIDE_ROOTS:
        raise unknown_key(root, OVERRIDE_ROOTS, "the run file (its sections and arrays)")
    cls = _TABLES.get(root)
    if cls is not None and len(path) > 1 and path[1] not in _fields(cls):
        raise unknown_key(path[1], _fields(cls), f"section [{root}]")
    if root == "stages" and len(path) > 2:
        if path[2] not in _fields(StageSpec):
            raise unknown_key(path[2], _fields(StageSpec), f"[[stages]] {'.'.join(path[:2])}")
        if path[2] == "optim" and len(path) > 3 and path[3] not in _fields(OptimConfig):
            raise unknown_key(path[3], _fields(OptimConfig), f"{'.'.join(path[:3])}")


def _index(node: list, key: str, parent: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        have = f"indexes 0 to {len(node) - 1}" if node else "no entries"
        raise ConfigError(f"{parent}.{key}: {key!r} is no index of {parent} ({have})")
    return int(key)


def _child(node: Any, key: str, parent: str) -> Any:
    """The table or array at ``key`` of ``node`` (at ``parent``, "" for the file), a missing
    table made (a missing array of the file's is empty: an index into it is an error)."""
    if isinstance(node, dict):
        if key not in node:
            node[key] = [] if not parent and key in _ARRAYS else {}
        return node[key]
    if isinstance(node, list):
        return node[_index(node, key, parent)]
    raise ConfigError(f"{parent} is {node!r}, not a table or an array")


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set each ``KEY=VALUE`` of ``overrides`` into ``data``, a parsed run file, in order;
    returns ``data``.

    Raises:
        ConfigError: naming the override: not KEY=VALUE, an unknown key (with close matches),
            an index past the end of an array, or a path through a value that is no table.
    """
    for text in overrides:
        path, value = parse_override(text)
        try:
            check_key_path(path)
            node: Any = data
            for depth, key in enumerate(path[:-1]):
                node = _child(node, key, ".".join(path[:depth]))
            parent = ".".join(path[:-1])
            if isinstance(node, dict):
                node[path[-1]] = value
            elif isinstance(node, list):
                node[_index(node, path[-1], parent)] = value
            else:
                _child(node, path[-1], parent)  # raises: not a table
        except ConfigError as exc:
            raise ConfigError(f"override {text!r}: {exc}") from None
    return data


def toml_value(value: Any) -> str:
    """``value`` as TOML writes it (a string quoted, a list in brackets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    # a TOML basic string: JSON's escapes are TOML's, and TOML escapes DEL too
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def overrides_note(overrides: Sequence[str]) -> str:
    """The comment ``run.toml`` ends with when the run file was overridden: one override a
    line, as given (empty without overrides)."""
    if not overrides:
        return ""
    lines = "".join(f"# {text}\n" for text in overrides)
    return (
        "\n# Overridden on the command line (atoken train RUN.toml KEY=VALUE ...), in order,\n"
        f"# over the keys above:\n{lines}"
    )
