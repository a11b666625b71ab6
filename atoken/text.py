"""Text encoders for a tokenizer: built by registry name, frozen ones shared per process.

A frozen text tower is not part of the tokenizer's module tree: it is not saved with the
checkpoint (it is rebuilt from the name and parameters in the config), not copied into the EMA
model, not optimised, and one loaded instance serves every tokenizer that names it with the
same parameters (so its embedding cache is shared too). A trainable tower is a submodule
(``tokenizer.text_tower``) and is saved.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from atoken.plugins.manager import get_registry
from atoken.plugins.text_encoders import TextEncoder

__all__ = ["SharedTextEncoder", "build_text_encoder", "clear_text_encoder_cache"]

_lock = threading.Lock()
_frozen: dict[tuple[str, str], TextEncoder] = {}


def _key(name: str, params: Mapping[str, Any]) -> tuple[str, str] | None:
    try:
        return name, json.dumps(dict(params), sort_keys=True)
    except TypeError:  # a model instance or a callable: not shareable by value
        return None


def build_text_encoder(name: str, params: Mapping[str, Any]) -> TextEncoder:
    """The registered text encoder ``name`` built with ``params`` (frozen ones shared).

    Raises:
        UnknownComponentError: no plugin registered ``name``.
        WeightsNotFoundError: the tower's weights are not on this machine.
    """
    trainable = bool(params.get("trainable", False))
    key = None if trainable else _key(name, params)
    with _lock:
        if key is not None and key in _frozen:
            return _frozen[key]
    encoder = get_registry().text_encoders.create(name, **dict(params))
    if key is not None:
        with _lock:
            encoder = _frozen.setdefault(key, encoder)
    return encoder


def clear_text_encoder_cache() -> None:
    """Forget the shared frozen text encoders (their weights and embedding caches)."""
    with _lock:
        _frozen.clear()


class SharedTextEncoder:
    """A holder that ``copy.deepcopy`` does not copy (the EMA model shares the frozen tower)."""

    def __init__(self, value: TextEncoder | None) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict) -> SharedTextEncoder:
        return self
