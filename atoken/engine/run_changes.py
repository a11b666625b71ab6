"""What a resumed run may change, and what it changed: the run-file key paths that differ.

    config_changes(saved, cfg)  -> ["stages[2].tasks[0].losses[0].weight: 1.0 -> 0.5", ...]

A key path walks tables by key and arrays by index (``stages[2].tasks[0]``); two arrays of
different lengths (a loss added) differ as a whole. Each value is shown at most
:data:`VALUE_CHARS` characters long and at most :data:`MAX_LINES` paths are named, so the
message of a changed curriculum stays a few lines, not the whole old and new ``stages``.
"""

from __future__ import annotations

import json
from typing import Any

from atoken.engine.runconfig import RunConfig

__all__ = ["MAX_LINES", "RESUMABLE_KEYS", "VALUE_CHARS", "config_changes"]


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
