"""What the training loop trains: the :class:`TrainTask` protocol, and the error it raises
when the loss stays non-finite."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from atoken.core.errors import AtokenError

__all__ = ["NonFiniteLossError", "TrainTask"]


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
