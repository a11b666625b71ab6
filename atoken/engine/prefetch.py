"""The batches of the coming micro-steps, computed ahead in ``torch.utils.data`` workers.

The trainer asks for the batch of ``(step, micro)``. With ``workers = 0`` :class:`Prefetcher`
calls ``task.batch(step, micro)`` there and then, in the training process. With ``N > 0`` a
``DataLoader`` walks the micro-steps ``k = step * grad_accum + micro`` from the one asked for
to the end of the stage: each worker process computes whole batches (``task.batch`` with the
global RNG seeded as the trainer seeds it), up to ``prefetch`` each ahead, and the loader hands
them back in ``k`` order. The order is the sampler's (``k``), never the workers' timing, and a
batch is a function of ``(seed, step, micro, rank)`` only, so the batches are bit-identical to
``workers = 0``; a resumed run (or any jump) restarts the walk at the step asked for.

Workers are forked from the training process (where the platform has ``fork``), so the task
and its data source are inherited, not pickled.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["Prefetcher"]


def _identity(batch: Any) -> Any:
    return batch


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; the training process keeps the cores


class _MicroBatches(Dataset):
    """Item ``k`` is the batch of micro-step ``k = step * grad_accum + micro``."""

    def __init__(self, task: Any, grad_accum: int, seed_of: Callable[[int, int], int]) -> None:
        self.task, self.grad_accum, self.seed_of = task, grad_accum, seed_of

    def __getitem__(self, k: int) -> Any:
        step, micro = divmod(k, self.grad_accum)
        torch.manual_seed(self.seed_of(step, micro))  # as the trainer seeds before a batch
        return self.task.batch(step, micro)


class Prefetcher:
    """The batches of ``task``, from worker processes ahead of the loop (see the module).

    Args:
        task: anything with ``batch(step, micro)``.
        workers: worker processes (0: batches computed on demand in this process).
        grad_accum: micro-steps per step.
        end_step: the first step not to prefetch (the stage's end).
        seed_of: ``seed_of(step, micro)``: the global seed the trainer sets before a batch.
        prefetch: batches each worker computes ahead.
    """

    def __init__(
        self,
        task: Any,
        *,
        workers: int,
        grad_accum: int,
        end_step: int,
        seed_of: Callable[[int, int], int],
        prefetch: int = 2,
    ) -> None:
        self.task, self.workers, self.grad_accum = task, workers, grad_accum
        self.end = end_step * grad_accum
        self.seed_of, self.prefetch = seed_of, prefetch
        self._it: Iterator[Any] | None = None
        self._next = -1

    def _start(self, k: int) -> None:
        self.close()
        fork = "fork" in multiprocessing.get_all_start_methods()
        loader = DataLoader(
            _MicroBatches(self.task, self.grad_accum, self.seed_of),
            batch_size=None,
            sampler=range(k, self.end),
            num_workers=self.workers,
            prefetch_factor=self.prefetch,
            collate_fn=_identity,
            worker_init_fn=_one_thread,
            multiprocessing_context="fork" if fork else None,
            generator=torch.Generator(),  # the workers' base seed: not from the global RNG
        )
        self._it, self._next = iter(loader), k

    def get(self, step: int, micro: int) -> Any:
        """The batch of ``(step, micro)``."""
        k = step * self.grad_accum + micro
        if self.workers == 0 or k >= self.end:  # past the stage's end: nothing to prefetch
            return self.task.batch(step, micro)
        if self._it is None or k != self._next:
            self._start(k)
        batch = next(self._it)
        self._next = k + 1
        return batch

    def close(self) -> None:
        """Stop the workers (a later :meth:`get` starts them again)."""
        self._it = None  # the loader's iterator shuts its workers down when it is freed
