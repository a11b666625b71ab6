"""What a resumed run may change, and what it changed: the run-file key paths that differ.

    config_changes(saved, cfg)  -> ["stages[2].tasks[0].losses[0].weight: 1.0 -> 0.5", ...]
    keep_schedule(saved, cfg)   -> cfg with the learning-rate schedule the checkpoint's run had

A key path walks tables by key and arrays by index (``stages[2].tasks[0]``); two arrays of
different lengths (a loss added) differ as a whole. Each value is shown at most
:data:`VALUE_CHARS` characters long and at most :data:`MAX_LINES` paths are named, so the
message of a changed curriculum stays a few lines, not the whole old and new ``stages``.

``[train] steps`` may change on resume; the learning-rate schedule does not follow it unless
asked (``atoken train --resume --steps N --reschedule``): a run without ``[[stages]]`` keeps
the warmup and cosine over the steps it was started with, recorded as ``[optim]
schedule_steps`` in the resumed run's configuration (``run.json`` and its checkpoints).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from atoken.engine.runconfig import RunConfig

__all__ = ["MAX_LINES", "RESUMABLE_KEYS", "VALUE_CHARS", "config_changes", "keep_schedule"]


#: Run-file keys a resumed run may change: they steer the run, not what it trains.
RESUMABLE_KEYS = frozenset(
    {
        "run.name",
        "run.out_dir",
        "train.steps",
        "train.max_minutes",
        "train.eval_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.checkpoint_format",
        "train.log_every",
        "train.progress",
        "train.device",
        # how batches are computed and how many bad samples are tolerated, not which batches
        "train.data_workers",
        "train.max_bad_samples",
        # the schedule's length: a resume keeps the checkpoint's unless --reschedule
        "optim.schedule_steps",
        "log.tensorboard",
        # how the processes share the work, not what they train (any world size resumes)
        "distributed.strategy",
        "distributed.backend",
        "distributed.timeout",
        "distributed.param_dtype",
        "distributed.activation_checkpointing",
        "distributed.reshard_after_forward",
    }
)

#: The longest a value is shown in a change line (longer ones end in "...").
VALUE_CHARS = 60
#: The most change lines named; the rest are counted.
MAX_LINES = 20
_MISSING = object()


def _flat(old: Any, new: Any, path: str, out: dict[str, tuple[Any, Any]]) -> None:
    """``out[path] = (old, new)`` for every leaf of the two trees; tables recurse by key,
    arrays of one length by index (``_MISSING``: the key is on one side only)."""
    if isinstance(new, dict) and old is _MISSING:
        old = {}
    elif isinstance(old, dict) and new is _MISSING:
        new = {}
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:
            where = f"{path}.{key}" if path else str(key)
            _flat(old.get(key, _MISSING), new.get(key, _MISSING), where, out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and old:
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _flat(a, b, f"{path}[{i}]", out)
    else:
        out[path] = (old, new)


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    text = repr(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 3] + "..."


def _plain(tree: Any) -> Any:
    return json.loads(json.dumps(tree, default=str))


def config_changes(saved: str, cfg: RunConfig) -> list[str]:
    """``"key.path: saved -> now"`` for each run-file key path that differs from the
    checkpoint's, in run-file order, each value cut to :data:`VALUE_CHARS` characters and at
    most :data:`MAX_LINES` lines (then ``"... and N more"``). Keys of
    :data:`RESUMABLE_KEYS` are left out, and so is a key the checkpoint lacks (added to the
    schema since) that the run leaves at its default."""
    try:
        old = json.loads(saved)
    except (TypeError, json.JSONDecodeError):
        return ["the checkpoint records no readable configuration"]
    if not isinstance(old, dict):
        return ["the checkpoint records no readable configuration"]
    pairs: dict[str, tuple[Any, Any]] = {}
    _flat(old, _plain(cfg.to_dict()), "", pairs)
    default: dict[str, tuple[Any, Any]] = {}
    plain_default = _plain(RunConfig().to_dict())
    _flat(plain_default, plain_default, "", default)
    lines = [
        f"{path}: {_show(a)} -> {_show(b)}"
        for path, (a, b) in pairs.items()
        if a != b
        and path not in RESUMABLE_KEYS
        and not (a is _MISSING and path in default and b == default[path][1])
    ]
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"... and {len(lines) - MAX_LINES} more"]
    return lines


def keep_schedule(saved: str, cfg: RunConfig) -> RunConfig:
    """``cfg`` with the schedule length of the run that wrote the checkpoint (its
    configuration ``saved``): when a run without ``[[stages]]`` resumes with other ``[train]
    steps``, ``[optim] schedule_steps`` is set to the checkpoint's schedule length (its
    ``schedule_steps``, else its ``[train] steps``). ``cfg`` itself when ``[optim]
    schedule_steps`` is set (``--reschedule`` sets it to the new steps), when the length is
    the same, or with ``[[stages]]`` (each stage's schedule is its steps, which ``--steps``
    does not change)."""
    if cfg.stages or cfg.optim.schedule_steps:
        return cfg
    try:
        old = json.loads(saved)
        if old.get("stages"):
            return cfg
        length = int(old["optim"].get("schedule_steps") or old["train"]["steps"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return cfg  # no readable configuration: config_changes names that
    if length == cfg.train.steps:
        return cfg
    return attrs.evolve(cfg, optim=attrs.evolve(cfg.optim, schedule_steps=length))
