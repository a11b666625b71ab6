"""What a training checkpoint holds, and loading it back into a :class:`Trainer`.

    trainer_state(trainer)              -> {step, stage, stage_name, nonfinite, model, ema,
                                            optimizer, losses, config}
    load_trainer_state(trainer, state)  enters the checkpoint's stage, then loads the weights,
                                        EMA, optimizer and counters
    save_trainer(trainer)               -> the checkpoint written ([train] checkpoint_format)
    resume_trainer(trainer, force=, checkpoint=, fallback=)
                                        -> whether a checkpoint was loaded: the newest, or the
                                           one named; a damaged newest one is an error naming
                                           the newest intact one (taken only with fallback)
    verify_checkpoint(path)             -> its counters, after checking it is intact

``checkpoint_format = "full"``: weights and optimizer state go through
:mod:`atoken.engine.sharded`, gathered to full tensors that rank 0 writes as one file, under DDP
and FSDP2 alike. ``"sharded"``: every rank writes its shards
(:mod:`atoken.engine.sharded_checkpoint`). Either kind resumes on any number of processes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from atoken.core.errors import RunFolderError
from atoken.engine.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from atoken.engine.distributed import on_main
from atoken.engine.run_changes import config_changes, keep_schedule
from atoken.engine.run_folder import append_record
from atoken.engine.sharded import (
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_state,
)
from atoken.engine.sharded_checkpoint import load_sharded, save_sharded, verify_sharded
from atoken.engine.train_task import data_positions

__all__ = [
    "find_checkpoint",
    "load_trainer_state",
    "resume_trainer",
    "save_trainer",
    "trainer_state",
    "verify_checkpoint",
]


def trainer_state(trainer: Any) -> dict[str, Any]:
    """The checkpoint of ``trainer`` now (a collective under FSDP2: every rank calls it)."""
    return {
        "step": trainer.step,
        "stage": trainer.stage_index,
        "stage_name": trainer.stage.name,
        "nonfinite": trainer.nonfinite,
        "model": model_state(trainer.module),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else {},
        "optimizer": optimizer_state(trainer.module, trainer.optimizer),
        "losses": torch.tensor(trainer.losses, dtype=torch.float64),
        "config": json.dumps(trainer.cfg.to_dict(), default=str),
        "data": {"positions": data_positions(trainer.task, trainer.step)},
    }


def load_trainer_state(trainer: Any, state: dict[str, Any]) -> None:
    """Load ``state`` into ``trainer``; a checkpoint of a later stage first enters the stages
    up to it (their transforms give the model the checkpoint's shape). ``state`` is a full
    checkpoint, or a sharded one's :func:`read_meta` (its tensors are read by every rank).

    Raises:
        CheckpointError: a stage this run does not reach, or weights that do not fit.
    """
    saved = int(state.get("stage", 0))
    if not trainer.stage_index <= saved < len(trainer.plan):
        raise CheckpointError(
            f"checkpoint is of stage {saved} ({state.get('stage_name', '?')!r}); this run "
            f"is at stage {trainer.stage_index} of {len(trainer.plan)}"
        )
    while trainer.stage_index < saved:
        trainer.stage_index += 1
        trainer.start_stage(trainer.enter_stage(trainer.stage_index, trainer.plain_model()))
    try:
        if "sharded" in state:
            load_sharded(trainer, state["sharded"])
        else:
            load_model_state(trainer.module, state["model"])
            if trainer.ema is not None and state["ema"]:
                trainer.ema.load_state_dict(state["ema"])
            load_optimizer_state(trainer.module, trainer.optimizer, state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not fit this run's model: {exc}") from exc
    trainer.step = int(state["step"])
    trainer.nonfinite = int(state["nonfinite"])
    trainer.losses = [float(x) for x in state["losses"]]
    data = state.get("data")
    positions = data.get("positions") if isinstance(data, dict) else None
    resume = getattr(trainer.task, "resume_data", None)
    if positions and callable(resume):  # checkpoints of atoken < 0.5 hold none: the step
        resume(trainer.step, {str(k): int(v) for k, v in positions.items()})


def save_trainer(trainer: Any) -> Path | None:
    """Write ``trainer``'s checkpoint in its ``[train] checkpoint_format`` (every rank calls
    it) and call ``atoken_checkpoint_saved`` on rank 0; returns the path on rank 0."""
    keep = trainer.cfg.train.keep_checkpoints
    if trainer.cfg.train.checkpoint_format == "sharded":
        path = save_sharded(trainer, trainer.ckpt_dir, keep)
        on_main(
            lambda: trainer.hooks.atoken_checkpoint_saved(
                trainer=trainer, step=trainer.step, path=path
            ),
            trainer.dist,
            "the checkpoint hooks",
        )
        return path if trainer.dist.main else None
    state = trainer_state(trainer)  # every rank: gathering FSDP2 shards is a collective

    def write() -> Path:
        path = save_checkpoint(state, trainer.ckpt_dir, trainer.step, keep)
        trainer.hooks.atoken_checkpoint_saved(trainer=trainer, step=trainer.step, path=path)
        return path

    path = on_main(write, trainer.dist, f"the checkpoint at step {trainer.step}")
    return path if trainer.dist.main else None


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's counters and configuration after checking it is intact: a full file is
    loaded (``weights_only=True``); a sharded folder's ``meta.json`` and JSON index are read
    and every data file is checked to hold the bytes the index points at.

    Raises:
        CheckpointError: the damaged checkpoint and file, named.
    """
    return verify_sharded(path) if path.is_dir() else load_checkpoint(path)


def find_checkpoint(folder: Path, name: str) -> Path:
    """The complete checkpoint of ``folder`` that ``name`` names: ``step_N`` (any number of
    digits), ``N``, or the file or folder name.

    Raises:
        CheckpointError: no such checkpoint (the ones there are listed).
    """
    found = list_checkpoints(folder)
    digits = name.removeprefix("step_").removesuffix(".pt")
    for path in found:
        if path.name == name or (digits.isdigit() and int(path.name[5:13]) == int(digits)):
            return path
    there = ", ".join(p.name for p in found) or "none"
    raise CheckpointError(f"no checkpoint {name!r} in {str(folder)!r} (there: {there})")


def _newest_intact(found: list[Path], fallback: bool) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint and its state; a damaged one is an error that names the newest
    intact one, which is taken instead only with ``fallback``."""
    try:
        return found[-1], verify_checkpoint(found[-1])
    except CheckpointError as exc:
        damaged = exc
    for older in reversed(found[:-1]):
        try:
            state = verify_checkpoint(older)
        except CheckpointError:
            continue
        if not fallback:
            raise CheckpointError(
                f"{damaged} The newest intact checkpoint is {older.name} (step "
                f"{state['step']}): resume from it with --resume-from {older.name} or "
                "--fallback; nothing was deleted"
            ) from damaged
        logging.getLogger("atoken").warning(
            "%s; resuming from the newest intact checkpoint, %s (--fallback)", damaged, older.name
        )
        return older, state
    raise CheckpointError(f"{damaged} No older checkpoint is intact.") from damaged


def resume_trainer(
    trainer: Any, *, force: bool = False, checkpoint: str | None = None, fallback: bool = False
) -> bool:
    """:meth:`atoken.engine.trainer.Trainer.resume`: load the newest checkpoint (or the one
    ``checkpoint`` names, :func:`find_checkpoint`), file or sharded folder, into ``trainer``;
    the metrics log drops the records of the steps to redo and says where the run went on
    (a ``resumed`` record: the step, the world size and the data positions). Other ``[train]
    steps`` keep the checkpoint's learning-rate schedule
    (:func:`atoken.engine.run_changes.keep_schedule`).

    Raises:
        CheckpointError: the checkpoint is damaged (and which older one is intact), or the
            named one does not exist.
    """
    if checkpoint is not None:
        path = find_checkpoint(trainer.ckpt_dir, checkpoint)
        state = verify_checkpoint(path)
    else:
        found = list_checkpoints(trainer.ckpt_dir)
        if not found:
            trainer.rewind_log(0)
            return False
        path, state = _newest_intact(found, fallback)
    saved = state.get("config", "{}")
    cfg = keep_schedule(saved, trainer.cfg)  # --steps N: the schedule stays as it was
    changed = config_changes(saved, cfg)
    if changed and not force:
        raise RunFolderError(
            f"{path} was written by another run configuration; what differs "
            "(checkpoint -> now):\n"
            + "".join(f"  {line}\n" for line in changed)
            + "Resume with the run file it was trained with, or pass --force to accept "
            "the changes"
        )
    if cfg is not trainer.cfg:  # recorded in run.json and the checkpoints from here on
        trainer.cfg = cfg
        trainer.optim_cfg = cfg.stage_optim(trainer.stage)
    trainer.load_state_dict(state)
    trainer.rewind_log(trainer.step)
    if trainer.dist.main:  # the log says where the run went on, and on how many
        positions = data_positions(trainer.task, trainer.step)
        record = {"step": trainer.step, "kind": "resumed", "world": trainer.dist.world}
        append_record(trainer.metrics_path, {**record, "data": positions})
    return True
