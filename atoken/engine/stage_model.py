"""The model a stage trains, placed on the ranks, and the views of its weights a run reads.

    weights = StageModel(task.model, dist, cfg.distributed, device, ema_decay=0.999,
                         ema_warmup=True)
    weights.module              the plain module on ``device``: what is saved and evaluated
    weights.model               ``module`` wrapped for the ranks (DDP, FSDP2): what the loss
                                runs through (:func:`atoken.engine.distributed.wrap`)
    weights.ema                 its EMA (:func:`atoken.engine.sharded.build_ema`), or None
    weights.eval_model          the EMA when enabled, else the live module
    weights.which               which of the two it is: "ema" or "live"
    weights.export()            a plain module with the weights a run exports
    weights.plain(ema=True)     a plain module a stage transform can change
    weights.clip_gradients(max_norm)
                                the step's gradients averaged over the ranks and clipped
    weights.update_ema()        the EMA moved towards the live weights (when enabled)
    weights.evaluate(fn, step, out_dir)
                                ``fn(model, step, out_dir)`` on the ranks that evaluate

Under FSDP2 (``sharded``) the weights are split over the ranks: the views gather them (a
collective: every rank calls) into a plain copy of the module taken before it was sharded
(:class:`atoken.engine.sharded.ExportTemplate`).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.engine.device import fast_bf16
from atoken.engine.distributed import Dist, on_main, sync_gradients, wrap
from atoken.engine.run_sections import DistributedConfig
from atoken.engine.sharded import ExportTemplate, build_ema, full_state, model_state

__all__ = ["StageModel"]

#: ``evaluate(model, step, out_dir) -> metrics``: a task's held-out evaluation.
Evaluate = Callable[[nn.Module, int, Path], dict[str, float]]


class StageModel:
    """``module`` moved to ``device`` and wrapped for the ranks of ``dist`` as
    ``distributed`` says, with an EMA of ``ema_decay`` (none at 0), warmed up with
    ``ema_warmup`` (:func:`atoken.engine.sharded.ema_decay_at`)."""

    def __init__(
        self,
        module: nn.Module,
        dist: Dist,
        distributed: DistributedConfig,
        device: torch.device,
        *,
        ema_decay: float,
        ema_warmup: bool = True,
    ) -> None:
        self.dist, self.strategy = dist, distributed.strategy
        self.sharded = dist.active and distributed.strategy == "fsdp"
        self.module = module.to(device)
        # FSDP2: a plain copy the gathered weights are exported into, taken before sharding
        self.template = ExportTemplate(self.module) if self.sharded else None
        self.model = wrap(self.module, dist, distributed, device, fast_bf16(device))
        self.ema = build_ema(self.module, ema_decay, sharded=self.sharded, warmup=ema_warmup)

    def clip_gradients(self, max_norm: float) -> torch.Tensor:
        """Average the gradients over the ranks (DDP: here; FSDP2 did in backward) and clip
        their norm to ``max_norm`` (0: no clipping); returns the norm before clipping."""
        if self.dist.active and self.strategy == "ddp":
            sync_gradients(self.module, self.dist)
        params = [p for p in self.module.parameters() if p.requires_grad]
        gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
        if hasattr(gnorm, "full_tensor"):  # FSDP2: a DTensor
            gnorm = gnorm.full_tensor()
        return gnorm

    def update_ema(self) -> None:
        """Move the EMA (when enabled) towards the live weights, after an optimizer step."""
        if self.ema is not None:
            self.ema.update_parameters(self.module)

    @property
    def which(self) -> str:
        """Which weights are evaluated and exported: ``"ema"`` or ``"live"`` (no EMA)."""
        return "live" if self.ema is None else "ema"

    @property
    def eval_model(self) -> nn.Module:
        """The EMA weights when enabled, else the live module.

        Raises:
            ConfigError: under FSDP2, where the weights are sharded (:meth:`export`).
        """
        if self.sharded:
            raise ConfigError("under FSDP2 the weights are sharded: call export_model()")
        return self.ema.module if self.ema is not None else self.module

    def export(self) -> nn.Module | None:
        """A plain module with the weights a run exports (the EMA when enabled). Under FSDP2
        they are gathered (every rank calls) into an unsharded copy on rank 0; the other ranks
        get None."""
        if not self.sharded:
            return self.eval_model
        # full tensors (model_state: on rank 0 only, {} elsewhere)
        state = self.ema.module_state() if self.ema is not None else model_state(self.module)
        return self.template.fill(state) if self.dist.main else None

    def plain(self, *, ema: bool = False) -> nn.Module:
        """The model as a plain module a stage transform can change: the live one, or under
        FSDP2 an unsharded copy filled with the gathered weights on every rank (a collective).
        ``ema``: with the EMA weights (when enabled) in place of the live ones."""
        if not self.sharded:
            if ema and self.ema is not None:
                self.module.load_state_dict(self.ema.module.state_dict())
            return self.module
        use_ema = ema and self.ema is not None
        state = self.ema.module_state() if use_ema else full_state(self.module)
        return self.template.fill(state)

    def evaluate(self, evaluate: Evaluate, step: int, out_dir: Path) -> dict[str, float]:
        """``evaluate`` of :attr:`eval_model` in eval mode, without gradients. Under FSDP2
        every rank runs the sharded model (the EMA weights swapped in) and rank 0 keeps what
        it writes; else rank 0 evaluates, every rank gets its metrics and an error there stops
        every rank."""
        if not self.sharded:
            here = partial(self._evaluate_here, evaluate, step, out_dir)
            return on_main(here, self.dist, "the evaluation")
        applied = self.ema.applied(self.module) if self.ema is not None else nullcontext()
        with applied, tempfile.TemporaryDirectory() as scratch, torch.no_grad():
            self.module.eval()
            return evaluate(self.module, step, out_dir if self.dist.main else Path(scratch))

    def _evaluate_here(self, evaluate: Evaluate, step: int, out_dir: Path) -> dict[str, float]:
        model = self.eval_model
        model.eval()
        with torch.no_grad():
            return evaluate(model, step, out_dir)
