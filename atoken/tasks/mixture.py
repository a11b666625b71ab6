"""N tasks trained as one: the mixture the trainer runs (a :class:`TrainTask`).

Micro-step ``k = step * grad_accum + micro`` trains one task:

    round_robin   task k mod N; its loss is scaled by the task's weight
    weighted      task drawn with probability w_i / sum(w), from (seed, step, micro); unscaled

so ``[optim] grad_accum = N`` with ``round_robin`` accumulates one micro-batch of every task
into each optimizer step. The choice is a function of (seed, step, micro) only, so a resumed
run trains the same tasks on the same batches. Log terms and evaluation metrics are prefixed
by the task's label (``image_reconstruction/mse``, ``depth/psnr``); each task's pictures go to
``out_dir / label``. A metric, or a task's whole evaluation, that fails is a
:class:`~atoken.plugins.metrics.base.MetricFailure` among the metrics, with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.plugins.metrics.base import guarded

__all__ = ["TaskMixture"]


class TaskMixture:
    """The tasks of a run behind the trainer's one-task interface.

    Args:
        model: the tokenizer all tasks train.
        tasks: the built tasks, in run-file order.
        schedule: ``"round_robin"`` or ``"weighted"``.
        grad_accum: micro-steps per optimizer step.
        seed: the run's seed (the weighted draw).
        pretrained_prefixes: parameter-name prefixes that get ``[optim] encoder_lr_mult``.
    """

    def __init__(
        self,
        model: nn.Module,
        tasks: Sequence[Any],
        *,
        schedule: str = "round_robin",
        grad_accum: int = 1,
        seed: int = 0,
        pretrained_prefixes: tuple[str, ...] = (),
    ) -> None:
        if not tasks:
            raise ConfigError("a run needs at least one [[tasks]] table")
        if schedule not in ("round_robin", "weighted"):
            raise ConfigError(f"mixture must be round_robin or weighted, got {schedule!r}")
        self.model, self.tasks, self.schedule = model, list(tasks), schedule
        self.grad_accum, self.seed = grad_accum, seed
        self.pretrained_prefixes = pretrained_prefixes
        self.pca: Any = None  # the PCATokenizer the run started as ([model] pca_init), if any
        self.weights = torch.tensor([float(t.weight) for t in self.tasks], dtype=torch.float64)

    def index(self, step: int, micro: int) -> int:
        """The task trained at (step, micro-step)."""
        if self.schedule == "round_robin":
            return (step * self.grad_accum + micro) % len(self.tasks)
        g = torch.Generator().manual_seed((self.seed * 7_919 + step) * 131 + micro + 17)
        return int(torch.multinomial(self.weights, 1, generator=g))

    def batch(self, step: int, micro: int) -> tuple[int, Any]:
        i = self.index(step, micro)
        return i, self.tasks[i].batch(step, micro)

    def data_position(self, step: int) -> dict[str, int]:
        """Each task's data position before ``step``, by label (tasks whose sources order
        samples by position only: see :class:`atoken.data.epoch_order.EpochOrder`)."""
        found = {}
        for task in self.tasks:
            position = getattr(task, "data_position", None)
            value = position(step) if callable(position) else None
            if value is not None:
                found[task.label] = int(value)
        return found

    def resume_data(self, step: int, positions: dict[str, int]) -> None:
        """Go on from a checkpoint's :meth:`data_position` (labels it does not name keep the
        step's own position)."""
        for task in self.tasks:
            resume = getattr(task, "resume_data", None)
            if task.label in positions and callable(resume):
                resume(step, int(positions[task.label]))

    def count(self, batch: tuple[int, Any]) -> float:
        """What the micro-step's task averages its loss over (``task.count``; 1 without)."""
        i, data = batch
        count = getattr(self.tasks[i], "count", None)
        return float(count(data)) if callable(count) else 1.0

    def loss(self, model: nn.Module, batch: tuple[int, Any]) -> tuple[torch.Tensor, dict]:
        i, data = batch
        task = self.tasks[i]
        loss, terms = task.loss(model, data)
        if self.schedule == "round_robin":
            loss = task.weight * loss
        logs = {f"{task.label}/{k}": v for k, v in terms.items()}
        logs[f"{task.label}/loss"] = float(loss.detach())
        return loss, logs

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        """Every task's held-out metrics, prefixed by its label. A task whose evaluation
        raises gives ``label/evaluate``, a failure with its reason
        (:class:`~atoken.plugins.metrics.base.MetricFailure`); the other tasks still evaluate."""
        metrics: dict[str, float] = {}
        for task in self.tasks:
            evaluate = partial(task.evaluate, model, step, Path(out_dir) / task.label)
            values = guarded("evaluate", evaluate)
            metrics.update({f"{task.label}/{k}": v for k, v in values.items()})
        return metrics

    def is_pretrained(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.pretrained_prefixes)
