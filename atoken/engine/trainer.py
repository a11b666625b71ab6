"""The training loop: model-agnostic, deterministic and exactly resumable.

The loop knows nothing of modalities or losses. A :class:`TrainTask` supplies the model, the
batch of each step and the loss of a batch; the loop owns the optimizer, the schedule,
gradient accumulation and clipping, bf16 autocast, EMA weights, the non-finite guard,
atomic checkpoints, metrics JSONL, the progress (:mod:`atoken.engine.progress`) and the
lifecycle hooks, with its parts: the stages (:mod:`~atoken.engine.stages`), a stage's model on
the ranks with its EMA (:mod:`~atoken.engine.stage_model`), checkpoints and resume
(:mod:`~atoken.engine.trainer_state`), early stops (:mod:`~atoken.engine.stop_conditions`).

Determinism: the batch of a step is a function of (seed, step, micro-step) and the global RNG
is reseeded from the same triple before every micro-step, so a run interrupted and resumed
from a checkpoint produces the same losses as one that never stopped. ``[train]
data_workers`` compute the coming batches in worker processes (:mod:`atoken.engine.prefetch`),
which changes none of them.

Lifecycle hooks are called on ``hooks`` with keyword arguments only (atoken passes pluggy's
``pm.hook``): ``atoken_train_start(trainer)``, ``atoken_step_end(trainer, step, logs)``,
``atoken_eval_end(trainer, step, metrics)``, ``atoken_stage_end(trainer, stage, metrics)``,
``atoken_checkpoint_saved(trainer, step, path)``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atoken.core.errors import RunFolderError
from atoken.engine.checkpoint import remove_partial
from atoken.engine.device import fast_bf16, resolve_device, to_device
from atoken.engine.distributed import all_reduce_sum, global_share, setup, share_object
from atoken.engine.nonfinite import nonfinite_cause
from atoken.engine.optim import build_optimizer, lr_at, set_lr
from atoken.engine.prefetch import Prefetcher
from atoken.engine.progress import Progress, progress_mode
from atoken.engine.run_changes import RESUMABLE_KEYS
from atoken.engine.run_folder import (
    RunFolderLock,
    append_record,
    eval_record,
    hold,
    prepare_run_folder,
    truncate_log,
    write_run_files,
)
from atoken.engine.runconfig import RunConfig, StageSpec
from atoken.engine.stage_model import StageModel
from atoken.engine.stages import Stages
from atoken.engine.stop_conditions import StopConditions
from atoken.engine.train_task import NonFiniteLossError, TrainTask
from atoken.engine.trainer_state import (
    load_trainer_state,
    resume_trainer,
    save_trainer,
    trainer_state,
)

__all__ = ["RESUMABLE_KEYS", "NonFiniteLossError", "TrainTask", "Trainer", "fast_bf16"]


class _NoHooks:
    def __getattr__(self, name: str):
        return lambda **kwargs: None


def _step_seed(seed: int, step: int, micro: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 1_009 + micro + rank * 7_919_000_003) % (2**63 - 1)


class Trainer:
    """Run ``task`` as configured by ``cfg``, stage by stage (:mod:`atoken.engine.stages`).

    Args:
        cfg: the run configuration.
        task: the model, data and loss of the first stage.
        hooks: lifecycle hook caller (pluggy ``pm.hook`` or any object with those methods).
        device: where to train (default CPU; see :func:`resolve_device`); batches are moved
            there.
        enter_stage: ``enter_stage(index, model) -> TrainTask`` starts stage ``index`` > 0 of
            the plan: it transforms ``model``, a plain module with the weights the last stage
            exported, and returns the stage's task (:mod:`atoken.engine.stages`). Needed when
            the run file has more than one stage.

    Several processes (torchrun; ``[distributed]``): each trains on its rank's batches with
    its own RNG stream, the model wrapped by :func:`atoken.engine.distributed.wrap`; a task's
    optional ``count(batch)`` (what its loss averages over, e.g. samples) normalises each
    micro-step by the global count, so the gradient is the one of the whole global batch.
    Only rank 0 writes logs, pictures, checkpoints and stage outputs and calls the hooks.
    """

    def __init__(
        self,
        cfg: RunConfig,
        task: TrainTask,
        *,
        hooks: Any = None,
        device: torch.device | str = "cpu",
        enter_stage: Callable[[int], TrainTask] | None = None,
        run_file_text: str | None = None,
    ) -> None:
        self.cfg, self.task, self.run_file_text = cfg, task, run_file_text
        self.dist, self.device = setup(cfg.distributed, resolve_device(device))
        self.hooks = hooks if hooks is not None and self.dist.main else _NoHooks()
        self.out_dir = cfg.run.output
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.folder_lock = RunFolderLock(self.out_dir)  # taken by rank 0 (hold_folder)
        self.batches: Prefetcher | None = None  # the stage's (start_stage)
        self.stages = Stages(cfg, self.dist, can_enter=enter_stage is not None)
        self.plan, self.stage_index, self.enter_stage = self.stages.plan, 0, enter_stage
        self.progress = Progress(
            total=cfg.train.steps,
            mode=progress_mode(cfg.train.progress and self.dist.main),
            every=cfg.train.log_every,
            world=self.dist.world,
        )
        self.start_stage(task)
        self.step, self.nonfinite = 0, 0
        self.losses: list[float] = []  # the total loss of every completed step, in order
        self.last_eval: dict[str, float] = {}

    # ----------------------------------------------------------------------------- stages
    @property
    def stage(self) -> StageSpec:
        """The stage being trained."""
        return self.plan[self.stage_index]

    def start_stage(self, task: TrainTask) -> None:
        """Train ``task`` (the stage ``stage_index``'s): its optimizer settings, prefetcher,
        model on the ranks, EMA and optimizer, replacing the last stage's."""
        self.task = task
        self.optim_cfg = self.cfg.stage_optim(self.stage)
        if self.batches is not None:
            self.batches.close()
        self.batches = Prefetcher(  # [train] data_workers compute the coming batches
            task,
            workers=self.cfg.train.data_workers,
            grad_accum=self.optim_cfg.grad_accum,
            end_step=self.stages.end(self.stage_index),
            seed_of=partial(_step_seed, self.cfg.run.seed, rank=self.dist.rank),
        )
        d, w = self.cfg.train.ema_decay, self.cfg.train.ema_warmup  # the EMA and its warmup
        self.weights = weights = StageModel(
            task.model, self.dist, self.cfg.distributed, self.device, ema_decay=d, ema_warmup=w
        )
        # what is saved and evaluated; what the loss runs through (DDP, FSDP2); the EMA or None
        self.module, self.model, self.ema = weights.module, weights.model, weights.ema
        self.optimizer = build_optimizer(self.module, self.optim_cfg, task.is_pretrained)
        self.progress.count(self.module)

    def _enter(self, index: int) -> None:
        """Start stage ``index`` (the next one) from the weights the last one exported."""
        model = self.plain_model(ema=True)
        torch.manual_seed(_step_seed(self.cfg.run.seed, self.stages.starts[index], -1 - index))
        self.stage_index = index
        self.start_stage(self.enter_stage(index, model))
        self.stages.show(self.stage_index, self.progress, self.step)

    def _finish_stage(self) -> dict[str, float]:
        """Evaluate the stage's weights and write its metrics (and tokenizer)."""
        metrics = self.evaluate()
        record = self.stages.write(self.stage_index, self.step, metrics, self.export_model())
        if record["complete"]:  # not for a run stopped inside the stage (it ends after a resume)
            self.hooks.atoken_stage_end(trainer=self, stage=self.stage.name, metrics=metrics)
        return metrics

    # ----------------------------------------------------------------------------- weights
    @property
    def sharded(self) -> bool:
        """Whether the model is sharded over the ranks (FSDP2)."""
        return self.weights.sharded

    @property
    def eval_model(self) -> nn.Module:
        """The EMA weights when enabled, else the live model (FSDP2: :meth:`export_model`)."""
        return self.weights.eval_model

    def export_model(self) -> nn.Module | None:
        """A plain module with the weights a run exports (:meth:`StageModel.export`: the EMA
        when enabled; under FSDP2 a collective, and None on ranks other than 0)."""
        return self.weights.export()

    def plain_model(self, *, ema: bool = False) -> nn.Module:
        """The model as a plain module a stage transform can change (:meth:`StageModel.plain`;
        under FSDP2 a collective); ``ema``: with the EMA weights when enabled."""
        return self.weights.plain(ema=ema)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds (:func:`atoken.engine.trainer_state.trainer_state`)."""
        return trainer_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a checkpoint; one of a later stage first enters the stages up to it
        (:func:`atoken.engine.trainer_state.load_trainer_state`)."""
        load_trainer_state(self, state)

    def resume(
        self, *, force: bool = False, checkpoint: str | None = None, fallback: bool = False
    ) -> bool:
        """Load the newest checkpoint of this run, if any (a file or a sharded folder), or
        the one ``checkpoint`` names (``step_N``); returns whether one was loaded. Without one
        the run starts over (log records of the killed attempt dropped).

        Raises:
            RunFolderError: the checkpoint was written with another configuration (the keys
                that differ are named; ``force`` accepts them). Keys that only steer the run
                (:data:`RESUMABLE_KEYS`, e.g. ``[train] steps``) may change.
            CheckpointError: the newest checkpoint is damaged (the file is named, and the
                newest intact one, which ``fallback`` takes instead), or ``checkpoint``
                names none of the run's.
        """
        return resume_trainer(self, force=force, checkpoint=checkpoint, fallback=fallback)

    def hold_folder(self) -> AbstractContextManager[None]:
        """Hold the run folder's one-writer lock for a ``with`` block (rank 0 takes it,
        :func:`atoken.engine.run_folder.hold`); nests, so :meth:`fit` inside keeps holding it.

        Raises:
            RunFolderError: another process trains into the folder (on every rank).
        """
        return hold(self.folder_lock, self.dist)

    def prepare_folder(self, *, overwrite: bool = False) -> None:
        """Make ``out_dir`` ready for a fresh run: a folder holding a run is a
        ``RunFolderError`` unless ``overwrite`` (``atoken.engine.run_folder``)."""
        prepare_run_folder(self.out_dir, overwrite=overwrite)

    def save(self) -> Path | None:
        """Write a checkpoint (every rank calls it: a full file written by rank 0, or each
        rank's shards); returns its path on rank 0."""
        return save_trainer(self)

    # ----------------------------------------------------------------------------- logging
    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            append_record(self.metrics_path, record)

    def rewind_log(self, step: int) -> None:
        """Drop the metrics log's records after ``step`` (a resumed run redoes them)."""
        if self.dist.main:
            truncate_log(self.metrics_path, step)

    # ----------------------------------------------------------------------------- loop
    @property
    def use_bf16(self) -> bool:
        """Whether steps run under bf16 autocast (``precision = "auto"``: where bf16 is fast)."""
        precision = self.cfg.train.precision
        return precision == "bf16" or (precision == "auto" and fast_bf16(self.device))

    def _micro_step(self, step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch's backward; returns its loss as a share of the global batch's."""
        torch.manual_seed(_step_seed(self.cfg.run.seed, step, micro, self.dist.rank))
        raw = self.batches.get(step, micro)
        count = getattr(self.task, "count", None)
        share = global_share(float(count(raw)) if callable(count) else 1.0, self.dist)
        batch = to_device(raw, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            loss, terms = self.task.loss(self.model, batch)
        (loss * share / self.optim_cfg.grad_accum).backward()
        return loss.detach() * share, terms

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (with accumulation); returns the step's log record."""
        cfg, optim = self.cfg, self.optim_cfg
        step = self.step
        lr = lr_at(step - self.stages.starts[self.stage_index], optim, self.stage.steps)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.train()
        total, sums, counts = torch.zeros(()), {}, {}
        for micro in range(optim.grad_accum):
            loss, micro_terms = self._micro_step(step, micro)
            total = total + loss.float() / optim.grad_accum
            for k, v in micro_terms.items():  # a term's mean over the micro-steps that have it
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        terms = {k: sums[k] / counts[k] for k in sums}  # this rank's (rank 0's in the log)
        if self.dist.active:  # the global batch's loss: the mean of the ranks' shares
            total = all_reduce_sum(total, self.dist, f"the loss of step {step}")
            total = (total / self.dist.world).float()
        gnorm = self.weights.clip_gradients(optim.grad_clip)  # averaged over the ranks
        # "step": the steps done after this one, as in every record, checkpoint and progress line
        record = {"step": step + 1, "kind": "train", "stage": self.stage.name, "lr": lr}
        record |= {"loss": float(total), "grad_norm": float(gnorm), **terms}
        if not (torch.isfinite(total) and torch.isfinite(gnorm)):
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite += 1
            record["skipped"] = True
            if self.nonfinite >= cfg.train.max_nonfinite:
                raise NonFiniteLossError(
                    f"{self.nonfinite} consecutive non-finite steps (last at step {step + 1}: "
                    f"loss={float(total)}, grad_norm={float(gnorm)}); "
                    + nonfinite_cause(terms, float(total), bf16=self.use_bf16)
                )
        else:
            self.nonfinite = 0
            self.optimizer.step()
            self.weights.update_ema()
        self.losses.append(float(total))
        self.step = step + 1
        return record

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics of :attr:`eval_model` (rank 0 evaluates; all ranks get them); one
        that failed is a ``MetricFailure``, logged and shown with its reason (the run goes on)."""
        metrics = self.weights.evaluate(self.task.evaluate, self.step, self.out_dir)
        if self.dist.main:
            record = eval_record(metrics, self.step, self.stage.name, self.weights.which)
            self._log(record)
            self.progress.evaluated(record)
            self.hooks.atoken_eval_end(trainer=self, step=self.step, metrics=metrics)
        metrics = share_object(metrics, self.dist, "the evaluation")
        self.last_eval = dict(metrics)
        return metrics

    def fit(
        self,
        *,
        resume: bool = False,
        overwrite: bool = False,
        force: bool = False,
        resume_from: str | None = None,
        fallback: bool = False,
    ) -> dict[str, float]:
        """Train to ``cfg.train.steps`` (or the time limit); checkpoint, export, then evaluate.

        ``resume`` continues from the newest checkpoint (``force``: even one written with
        another configuration; ``resume_from``: from the checkpoint it names; ``fallback``:
        from the newest intact one when the newest is damaged; either implies ``resume``);
        otherwise the folder must not hold a run unless ``overwrite``
        (:meth:`prepare_folder`). The run folder's lock is held throughout
        (:meth:`hold_folder`); partial files of a killed save are removed first.
        """
        resume = resume or resume_from is not None or fallback
        with self.hold_folder():
            refused = None
            if self.dist.main:
                remove_partial(self.ckpt_dir)
                try:
                    if not resume:
                        self.prepare_folder(overwrite=overwrite)
                except RunFolderError as exc:
                    refused = str(exc)
            refused = share_object(refused, self.dist, "preparing the run folder")
            if refused:
                raise RunFolderError(refused)
            if resume:
                self.resume(force=force, checkpoint=resume_from, fallback=fallback)
            if self.dist.main:  # run.json: the configuration and which weights it evaluates
                config = {**self.cfg.to_dict(), "weights": self.weights.which}
                write_run_files(self.out_dir, config, self.run_file_text)
            return self._train()

    def _train(self) -> dict[str, float]:
        """The loop to the end, then the final checkpoint, tokenizer and evaluation."""
        self.hooks.atoken_train_start(trainer=self)
        stop = StopConditions(self.cfg.train.max_minutes, self.dist)
        self.stages.show(self.stage_index, self.progress, self.step)
        try:
            with stop:
                self._loop(stop)
        finally:
            self.batches.close()
            self.progress.close()
        self.save()  # the work first: a final evaluation that fails loses none of it
        self.stages.export(self.export_model())  # out_dir/tokenizer (rank 0)
        return self._finish_stage()

    def _loop(self, stop: StopConditions) -> None:
        """Steps to ``[train] steps``: logs, stage ends, evaluations and checkpoints on the way;
        stops early at ``max_minutes`` or on SIGTERM (after a checkpoint)."""
        cfg = self.cfg.train
        while self.step < cfg.steps:
            if self.step >= self.stages.starts[self.stage_index + 1]:
                self._enter(self.stage_index + 1)
            record = self.train_step()
            done = self.step
            if done % cfg.log_every == 0 or done == 1 or record.get("skipped"):
                self._log(record)
            self.hooks.atoken_step_end(trainer=self, step=done, logs=record)
            self.progress.update(done, record)
            stage_done = done == self.stages.starts[self.stage_index + 1] and done < cfg.steps
            if stage_done:
                self._finish_stage()
            elif cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                self.evaluate()
            saved = stage_done or bool(cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
            if saved:
                self.save()
            reason = stop.reason()  # SIGTERM on any rank, or [train] max_minutes passed
            if reason:
                if reason == "sigterm" and not saved:
                    self.save()  # the run goes on from it with --resume
                self._log(
                    {"step": done, "kind": "stopped", "stage": self.stage.name, "reason": reason}
                )
                if reason == "sigterm":
                    raise stop.stopped(done)
                break
