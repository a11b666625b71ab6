"""Sharded checkpoints: every rank writes its own shards with ``torch.distributed.checkpoint``.

    checkpoints/step_NNNNNNNN/        a DCP folder ([train] checkpoint_format = "sharded")
        .metadata                     every tensor's global shape and where its pieces are,
                                      as JSON (:mod:`atoken.engine.dcp_format`: nothing in the
                                      folder is unpickled on resume)
        __<rank>_0.distcp             the pieces of the model, optimizer and EMA rank <rank> holds
        meta.json                     step, stage, counters, losses, config, data position;
                                      written last by rank 0: the folder is then complete

Nothing is gathered to one process: under FSDP2 each rank writes its shards of the
parameters, the AdamW moments and the EMA; under DDP or on one process the full tensors are
written once. DCP records each tensor's global shape, so a checkpoint written on N ranks
loads on M with any strategy (``dcp.load`` reads the pieces each rank's shards need).

The folder is written as ``.step_NNNNNNNN.<pid>.tmp/`` (the pid of rank 0: one name per
writer) and renamed by rank 0 once every rank has written its file, so a killed save never
leaves a folder under a real name. The data
position is the step: batches are a function of ``(seed, step, micro-step, rank)``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from atoken.engine.checkpoint import CheckpointError, fsync_dir, list_checkpoints, remove_checkpoint
from atoken.engine.dcp_format import (
    SafeLoadPlanner,
    SafeReader,
    SafeWriter,
    check_files,
    read_metadata,
)
from atoken.engine.distributed import barrier, on_main, share_object
from atoken.engine.train_task import data_positions

__all__ = ["META", "load_sharded", "read_meta", "save_sharded", "verify_sharded"]

#: The file that completes a sharded checkpoint folder.
META = "meta.json"
_META_KEYS = ("step", "stage", "nonfinite", "losses", "config")


def _tensors(trainer: Any) -> dict[str, Any]:
    """The model, optimizer and EMA state as this rank holds it (DTensor shards under FSDP2)."""
    module, ema = trainer.module, trainer.ema
    state: dict[str, Any] = {
        "model": get_model_state_dict(module),
        "optimizer": get_optimizer_state_dict(module, trainer.optimizer),
    }
    if ema is not None:
        state["ema"] = ema.shards() if hasattr(ema, "shards") else ema.state_dict()
    return state


def _meta(trainer: Any) -> dict[str, Any]:
    return {
        "format": "sharded",
        "step": trainer.step,
        "stage": trainer.stage_index,
        "stage_name": trainer.stage.name,
        "nonfinite": trainer.nonfinite,
        "losses": list(trainer.losses),
        "config": json.dumps(trainer.cfg.to_dict(), default=str),
        "world": trainer.dist.world,
        "strategy": trainer.cfg.distributed.strategy if trainer.dist.active else "single",
        # batches are drawn from (seed, step, micro-step, rank): the step is the position
        "data": {
            "step": trainer.step,
            "seed": trainer.cfg.run.seed,
            "positions": data_positions(trainer.task, trainer.step),  # where each source goes on
        },
    }


def save_sharded(trainer: Any, folder: Path, keep: int) -> Path:
    """Write ``trainer``'s checkpoint as ``folder/step_<step>/`` (every rank calls it) and
    keep the newest ``keep`` checkpoints; returns the folder.

    Raises:
        CheckpointError: a rank could not write (a full disk, no permission); the partial
            folder is removed and the older checkpoints are kept.
    """
    d = trainer.dist
    final = folder / f"step_{trainer.step:08d}"
    tmp = Path(share_object(str(folder / f".{final.name}.{os.getpid()}.tmp"), d, "the save's name"))

    def clear() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)

    on_main(clear, d, "preparing a sharded checkpoint")
    try:
        dcp.save(_tensors(trainer), storage_writer=SafeWriter(str(tmp)))
        error = ""
    except (Exception, dcp.CheckpointException) as exc:  # DCP's is a BaseException
        error = str(exc)
    if error:
        on_main(lambda: shutil.rmtree(tmp, ignore_errors=True), d, "removing a failed save")
        raise CheckpointError(
            f"cannot write sharded checkpoint {str(final)!r} ({error.strip()[:500]}); the "
            f"previous checkpoints in {str(folder)!r} are intact"
        )

    def finish() -> Path:
        with open(tmp / META, "w", encoding="utf-8") as f:
            json.dump(_meta(trainer), f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # the same step saved again (a resumed run ending where it was)
            remove_checkpoint(final)
        os.replace(tmp, final)
        fsync_dir(folder)
        for old in list_checkpoints(folder)[:-keep]:
            remove_checkpoint(old)
        return final

    path = on_main(finish, d, f"the checkpoint at step {trainer.step}")
    barrier(d, "a sharded checkpoint")
    return path


def read_meta(path: Path) -> dict[str, Any]:
    """The counters and configuration of a sharded checkpoint folder (no tensors).

    Raises:
        CheckpointError: the folder lacks ``meta.json`` or it is damaged.
    """
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"sharded checkpoint {str(path)!r}: {META} is unreadable ({exc})"
        ) from exc
    missing = [k for k in _META_KEYS if k not in meta] if isinstance(meta, dict) else _META_KEYS
    step = meta.get("step") if isinstance(meta, dict) else None
    if missing or isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(
            f"sharded checkpoint {str(path)!r}: {META} lacks {list(missing)} or has a bad "
            f"step {step!r} (a damaged or foreign folder)"
        )
    return {**meta, "sharded": str(path)}


def verify_sharded(path: Path) -> dict[str, Any]:
    """:func:`read_meta` after checking the folder's index and that every data file holds
    the bytes the index points at (nothing is unpickled, no tensor is read).

    Raises:
        CheckpointError: the damaged file, named.
    """
    meta = read_meta(path)
    check_files(path, read_metadata(path))
    return meta


def load_sharded(trainer: Any, path: Path) -> None:
    """Load the tensors of the sharded checkpoint ``path`` into ``trainer``'s model,
    optimizer and EMA, resharded to this run's ranks (every rank calls it).

    Raises:
        CheckpointError: a damaged or foreign folder (its index in another format, a file
            missing or truncated, a piece that does not load), named.
    """
    state = _tensors(trainer)
    path = Path(share_object(str(path), trainer.dist, "the checkpoint to load"))
    saved = read_metadata(path).state_dict_metadata
    # a parameter no step has used yet keeps no optimizer state: the saved run had none for
    # it either (the template made here has state for every parameter)
    held = {k.split(".", 2)[2] for k in saved if k.startswith("optimizer.state.")}
    optim = state["optimizer"]["state"]
    for name in list(optim):
        if not any(h.startswith(f"{name}.") for h in held):
            del optim[name]
    try:
        dcp.load(state, storage_reader=SafeReader(str(path)), planner=SafeLoadPlanner())
    except CheckpointError:
        raise
    except (Exception, dcp.CheckpointException) as exc:  # a damaged piece, a bad blob
        raise CheckpointError(
            f"sharded checkpoint {str(path)!r} does not load: {str(exc).strip()[:800]}"
        ) from exc
    # the optimizer's state is keyed by parameter name; strict=False as for full checkpoints
    set_model_state_dict(trainer.module, state["model"])
    options = StateDictOptions(strict=False)
    set_optimizer_state_dict(trainer.module, trainer.optimizer, state["optimizer"], options=options)
    if trainer.ema is not None:
        ema = trainer.ema
        if hasattr(ema, "load_shards"):
            ema.load_shards(state["ema"])
        else:  # AveragedModel: dcp.load filled its state dict's tensors in place
            ema.load_state_dict(state["ema"])
