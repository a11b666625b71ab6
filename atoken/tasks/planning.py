"""A task's micro-batch as its run-file table asks for it, before any data is read.

``atoken train --plan`` (:mod:`atoken.engine.plan`) counts tokens, FLOPs and activation memory from
the tables alone: building a task would open its data source (shards on a bucket, a mesh
store) on the planning machine. Each task class answers ``plan_batch(spec, config) ->``
:class:`BatchShape`; :func:`grid_batch` is the answer for crops and clips of a pixel grid
(the built-in image and video tasks), from the keys every such source takes.

Shapes: a sample of ``frames`` steps and sides ``h x w`` is
``ceil(frames / pt) * ceil(h / p) * ceil(w / p)`` tokens (``p``, ``pt``: the encoder's patch).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import attrs

from atoken.core.errors import ConfigError

__all__ = ["BatchShape", "grid_batch", "source_defaults"]


@attrs.frozen(kw_only=True)
class BatchShape:
    """One micro-batch of a task as its table asks for it, before any data is read (what
    ``atoken train --plan`` counts, :mod:`atoken.engine.plan`): ``samples`` per rank, and the tokens
    of one sample: ``tokens_mean`` on average over the random sizes, ``tokens_max`` at the
    largest size, ``tokens_sq_mean`` the mean of its square (attention FLOPs)."""

    samples: int
    tokens_mean: float
    tokens_max: int
    tokens_sq_mean: float
    note: str = ""  # what the plan cannot count for the task (printed with the plan)


def source_defaults(name: Any) -> dict[str, Any]:
    """The parameter defaults of the registered data source ``name`` ({} when unknown)."""
    from atoken.plugins.manager import get_registry

    registry = get_registry().data_sources
    if not isinstance(name, str) or name not in registry:
        return {}
    factory = registry.get(name)
    if attrs.has(factory):
        return {
            f.alias or f.name: f.default
            for f in attrs.fields(factory)
            if f.init
            and f.default is not attrs.NOTHING
            and not isinstance(f.default, attrs.Factory)
        }
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _ceil_moments(low: int, high: int, patch: int) -> tuple[float, float]:
    """E[a] and E[a²] of a = ceil(s / patch) for a side s uniform on the integers low..high."""
    cells = [math.ceil(s / patch) for s in range(low, high + 1)]
    return sum(cells) / len(cells), sum(a * a for a in cells) / len(cells)


def grid_batch(data: Mapping[str, Any], config: Any, *, where: str) -> BatchShape:
    """The micro-batch of a ``data`` table of crops or clips, from its keys (else the
    registered source's defaults): ``batch_size`` samples, each side drawn uniformly from
    ``crop_min..crop_max`` (or ``size`` for square samples), ``frames`` steps (0 or absent:
    one). A sample is ``ceil(frames / pt) * ceil(h / p) * ceil(w / p)`` tokens (``p`` and
    ``pt`` the encoder's patch sizes); samples smaller than a crop are not known here.

    Raises:
        ConfigError: no ``batch_size`` or side is known, or ``crop_min > crop_max``.
    """
    defaults = source_defaults(data.get("source"))

    def value(key: str) -> Any:
        return data.get(key, defaults.get(key))

    batch, high = value("batch_size"), value("crop_max")
    high = high if high is not None else value("size")
    if batch is None or high is None:
        missing = "batch_size" if batch is None else "crop_max (or size)"
        raise ConfigError(
            f"{where}: data = {{ source = {data.get('source')!r} }} does not say its {missing} "
            "(a source not registered here has no defaults): give it in the data table"
        )
    low = value("crop_min")
    low = high if low is None else low
    if low > high:
        raise ConfigError(f"{where}: data crop_min ({low}) > crop_max ({high})")
    enc = config.encoder
    mean, square = _ceil_moments(int(low), int(high), enc.patch_size)
    steps = math.ceil(max(int(value("frames") or 0), 1) / enc.temporal_patch)
    return BatchShape(
        samples=int(batch),
        tokens_mean=steps * mean**2,
        tokens_max=steps * math.ceil(high / enc.patch_size) ** 2,
        tokens_sq_mean=steps**2 * square**2,
    )
