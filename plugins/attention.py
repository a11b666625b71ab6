"""Built-in attention backends: ``sdpa`` (the CPU default), ``math`` (the reference) and, when
the package is installed, ``xformers`` (CUDA).

The functions live in :mod:`atoken.core.attention`; this plugin only registers them. All three
take the optional ``kv_seqlens`` keyword (queries and keys packed differently, as the decoder's
KV cache needs). xformers is never imported here: its backend function imports it on first
call.
"""

from __future__ import annotations

import importlib.util

from atoken.core.attention import attention_math, attention_sdpa, attention_xformers
from atoken.plugins.hookspecs import Register, hookimpl

__all__ = ["register_attention_backends"]


@hookimpl
def register_attention_backends(register: Register) -> None:
    """Register ``sdpa`` and ``math``, and ``xformers`` when it is installed."""
    register("sdpa", lambda: attention_sdpa)
    register("math", lambda: attention_math)
    if importlib.util.find_spec("xformers") is not None:
        register("xformers", lambda: attention_xformers)
