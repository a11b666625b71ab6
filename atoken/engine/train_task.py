"""What the training loop trains: the :class:`TrainTask` protocol, and the error it raises
when the loss stays non-finite."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from atoken.core.errors import AtokenError

__all__ = ["NonFiniteLossError", "TrainTask", "data_positions"]


class NonFiniteLossError(AtokenError, FloatingPointError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class TrainTask(Protocol):
    """What a run trains: the model, the batches and the loss."""

    model: nn.Module

    def batch(self, step: int, micro: int) -> Any:
        """The batch of (step, micro-step); must depend on nothing else."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss, named float terms for the log)."""

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        """Held-out metrics of ``model`` (the EMA weights when enabled)."""

    def is_pretrained(self, name: str) -> bool:
        """Whether parameter ``name`` came from a pretrained encoder (gets ``encoder_lr_mult``)."""

    # optional: ``data_position(step) -> {label: position}`` and ``resume_data(step,
    # positions)``, for sources that draw samples by position (data_positions)


def data_positions(task: Any, step: int) -> dict[str, int]:
    """Where ``task``'s data sources stand before ``step``, by task label (its optional
    ``data_position(step)``; empty for tasks whose batches depend on the step alone). A
    checkpoint records it, so a run resumed on another number of processes goes on at the
    next sample (:class:`atoken.data.epoch_order.EpochOrder`)."""
    position = getattr(task, "data_position", None)
    found = position(step) if callable(position) else None
    return {str(k): int(v) for k, v in found.items()} if isinstance(found, dict) else {}
