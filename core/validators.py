"""attrs validators and converters of the configs: each raises :class:`ConfigError` naming the
class and the field (``TokenizerConfig.latent_dim must be a positive int, got 0``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from atoken.core.errors import ConfigError

__all__ = [
    "PATH_NAME_RULE",
    "as_json",
    "as_tuple",
    "check_path_name",
    "float_triple",
    "int_tuple",
    "is_bool",
    "name_map",
    "non_negative_int",
    "one_of",
    "optional_name",
    "optional_names",
    "optional_positive_int",
    "path_name",
    "positive_float",
    "positive_int",
]


def positive_int(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{type(inst).__name__}.{attribute.name} must be a positive int, got {value!r}"
        )


def is_bool(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(
            f"{type(inst).__name__}.{attribute.name} must be true or false, got {value!r}"
        )


def positive_float(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(
            f"{type(inst).__name__}.{attribute.name} must be a finite number, got {value!r}"
        )
    if value <= 0:
        raise ConfigError(f"{type(inst).__name__}.{attribute.name} must be > 0, got {value!r}")


def one_of(*choices: str):
    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"{type(inst).__name__}.{attribute.name} must be one of {choices}, got {value!r}"
            )

    return check


def int_tuple(length: int):
    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if len(value) != length or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value
        ):
            raise ConfigError(
                f"{type(inst).__name__}.{attribute.name} must be {length} non-negative ints, "
                f"got {value!r}"
            )

    return check


def float_triple(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if len(value) != 3 or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        for v in value
    ):
        raise ConfigError(
            f"{type(inst).__name__}.{attribute.name} must be 3 numbers, got {value!r}"
        )


def as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def as_json(value: Any) -> Any:
    """The JSON form of a parameter table (what ``config.json`` will hold), so a saved and
    loaded config equals the original; a value JSON cannot hold is a ``ConfigError`` now, not
    when the trained tokenizer is saved."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"parameter tables must hold JSON values (str, numbers, lists): {exc}"
        ) from exc


def _where(inst: Any, attribute: attrs.Attribute) -> str:
    return f"{type(inst).__name__}.{attribute.name}"


def optional_positive_int(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """None or an int >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(
            f"{_where(inst, attribute)} must be a positive int or None, got {value!r}"
        )


def non_negative_int(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{_where(inst, attribute)} must be an int >= 0, got {value!r}")


def optional_name(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """None or a non-empty str (a component name)."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{_where(inst, attribute)} must be a name or None, got {value!r}")


def optional_names(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """None or a tuple of distinct non-empty names."""
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(m, str) and m for m in value):
        raise ConfigError(
            f"{_where(inst, attribute)} must be a list of names or None, got {value!r}"
        )
    if len(set(value)) != len(value):
        raise ConfigError(f"{_where(inst, attribute)} repeats a name: {value}")


def name_map(of: type) -> Any:
    """A mapping of names to values of type ``of`` (a head name per modality: ``str``; a
    parameter table per modality: ``Mapping``)."""

    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, of) and (v or of is not str)
            for k, v in value.items()
        ):
            raise ConfigError(
                f"{_where(inst, attribute)} must map modality names to {of.__name__} values, "
                f"got {value!r}"
            )

    return check


#: What a user-given name that becomes a folder or file name (``[run] name``, a ``[[tasks]]``
#: label, a ``[[stages]]`` name) may hold: one path component, never a path (docs/training.md).
PATH_NAME_RULE = (
    "1 to 100 characters: ASCII letters, digits, '-', '_' and '.', starting with a letter, "
    "a digit or '_' (it becomes a folder name: no '/', no '..', not absolute)"
)
_PATH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def check_path_name(value: Any, key: str) -> str:
    """``value`` if it is a name that may become one path component inside an output folder
    (:data:`PATH_NAME_RULE`): a separator, ``..``, an absolute path, a drive or a hidden
    name could write outside the folder or hide from it.

    Raises:
        ConfigError: naming ``key`` (``"name"``, ``"label"``) and the value.
    """
    if not isinstance(value, str) or _PATH_NAME.fullmatch(value) is None:
        raise ConfigError(f"{key} must be {PATH_NAME_RULE}; got {value!r}")
    return value


def path_name(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: :func:`check_path_name` naming the field (the run-file section is added
    by whoever structures the file)."""
    check_path_name(value, attribute.name)
