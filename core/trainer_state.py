"""What a training checkpoint holds, and loading it back into a :class:`Trainer`.

    trainer_state(trainer)              -> {step, stage, stage_name, nonfinite, model, ema,
                                            optimizer, losses, config}
    load_trainer_state(trainer, state)  enters the checkpoint's stage, then loads the weights,
                                        EMA, optimizer and counters

Weights and optimizer state go through :mod:`atoken.core.sharded`, so a checkpoint holds full
tensors under DDP and FSDP2 alike.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from atoken.core.checkpoint import CheckpointError
from atoken.core.sharded import (
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_state,
)

__all__ = ["load_trainer_state", "trainer_state"]


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
    }


def load_trainer_state(trainer: Any, state: dict[str, Any]) -> None:
    """Load ``state`` into ``trainer``; a checkpoint of a later stage first enters the stages
    up to it (their transforms give the model the checkpoint's shape).

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
        trainer._start_stage(trainer.enter_stage(trainer.stage_index))
    try:
        load_model_state(trainer.module, state["model"])
        if trainer.ema is not None and state["ema"]:
            trainer.ema.load_state_dict(state["ema"])
        load_optimizer_state(trainer.module, trainer.optimizer, state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not fit this run's model: {exc}") from exc
    trainer.step = int(state["step"])
    trainer.nonfinite = int(state["nonfinite"])
    trainer.losses = [float(x) for x in state["losses"]]
