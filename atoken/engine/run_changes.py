"""What a resumed run may change: the run-file keys that steer a run, not what it trains."""

from __future__ import annotations

import json
from typing import Any

from atoken.engine.runconfig import RunConfig

__all__ = ["RESUMABLE_KEYS", "config_changes"]


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


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(saved: str, cfg: RunConfig) -> list[str]:
    """``"key: saved -> now"`` for each run-file key that differs from the checkpoint's."""
    try:
        old = _flat(json.loads(saved))
    except (TypeError, json.JSONDecodeError):
        return ["the checkpoint records no readable configuration"]
    new = _flat(json.loads(json.dumps(cfg.to_dict(), default=str)))
    # a key the checkpoint lacks (added to the schema since) is unchanged at its default
    default = _flat(json.loads(json.dumps(RunConfig().to_dict(), default=str)))
    keys = sorted((set(old) | set(new)) - RESUMABLE_KEYS)
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in keys
        if old.get(k) != new.get(k) and not (k not in old and new.get(k) == default.get(k))
    ]
