"""State that outlives a process: model, optimizer and EMA as full tensors, whatever the
strategy, so a run saved on N processes resumes on M.

Under FSDP2 the parameters are sharded DTensors; these gather them to full CPU tensors
(collectives: every rank calls them) and scatter full tensors back into shards. On one
process or under ddp they are the plain ``state_dict`` calls. The optimizer state is keyed by
parameter name (``torch.distributed.checkpoint.state_dict``), the same on every strategy.

:class:`ShardedEMA` is the EMA of an FSDP2 model: a shard of the average beside each shard of
the parameters, updated like ``AveragedModel`` with ``get_ema_multi_avg_fn`` (the first update
copies, then ``ema = d * ema + (1 - d) * p``, ``d`` the decay or its warmup
:func:`ema_decay_at`); its state has ``AveragedModel``'s keys
(``n_averaged``, ``module.<name>``), so either loads the other's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

__all__ = [
    "ExportTemplate",
    "ShardedEMA",
    "build_ema",
    "ema_decay_at",
    "full_state",
    "is_sharded",
    "load_model_state",
    "load_optimizer_state",
    "model_state",
    "optimizer_state",
    "reshard",
]

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module``'s parameters are DTensors (FSDP2)."""
    return any(hasattr(p, "full_tensor") for p in module.parameters())


def reshard(module: nn.Module) -> None:
    """Free the gathered parameters of every FSDP2 unit of ``module`` (back to shards)."""
    for m in module.modules():
        if callable(getattr(m, "reshard", None)) and hasattr(m, "unshard"):
            m.reshard()


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


def model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict (a collective under FSDP2)."""
    if is_sharded(module):
        return get_model_state_dict(module, options=_FULL)
    return module.state_dict()


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict on every rank (a collective under FSDP2; :func:`model_state`
    gives it to rank 0 only)."""
    return {n: _full(t) for n, t in module.state_dict().items()}


def load_model_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (into shards under FSDP2)."""
    if is_sharded(module):
        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
    else:
        module.load_state_dict(state)


def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, full tensors (a collective under FSDP2)."""
    options = _FULL if is_sharded(module) else None
    return get_optimizer_state_dict(module, optimizer, options=options)


def load_optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load :func:`optimizer_state`'s output (or a plain ``optimizer.state_dict()``)."""
    if state.get("state") and all(isinstance(k, int) for k in state["state"]):
        optimizer.load_state_dict(state)  # by index: an older checkpoint
        return
    # strict=False: a parameter that never had a gradient (unused so far) has no state yet
    options = StateDictOptions(full_state_dict=is_sharded(module), strict=False)
    set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=options)


class ExportTemplate:
    """An unsharded copy of a model that holds no memory until it is filled: taken before
    FSDP2 shards the model, kept on the meta device (with the few non-persistent buffers a
    state dict does not carry), materialised on the CPU by :meth:`fill`."""

    def __init__(self, module: nn.Module) -> None:
        keys = set(module.state_dict())
        self.extras = {
            n: b.detach().cpu().clone() for n, b in module.named_buffers() if n not in keys
        }
        self.module = copy.deepcopy(module).to("meta")

    def fill(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The copy on the CPU with ``state`` (a full state dict) loaded."""
        module = self.module.to_empty(device="cpu")
        for name, buf in self.extras.items():
            owner, _, leaf = name.rpartition(".")
            module.get_submodule(owner).register_buffer(leaf, buf.clone(), persistent=False)
        module.load_state_dict(state)
        return module


def ema_decay_at(decay: float, n: int, *, warmup: bool = True) -> float:
    """The decay of the EMA update after ``n`` updates (the first copies): ``decay``, or with
    ``warmup`` timm's (and TensorFlow's ``num_updates``) ``min(decay, (1 + n) / (10 + n))``,
    so a short run's average follows the live weights instead of staying near its start."""
    return min(decay, (1 + n) / (10 + n)) if warmup else decay


def _ema_update(decay: float, warmup: bool) -> Any:
    """``AveragedModel``'s ``multi_avg_fn``: ``get_ema_multi_avg_fn`` at :func:`ema_decay_at`
    of the updates so far."""
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    def update(averages: list[torch.Tensor], current: list[torch.Tensor], n: Any) -> None:
        d = ema_decay_at(decay, int(n), warmup=warmup)
        get_ema_multi_avg_fn(d)(averages, current, n)

    return update


def build_ema(module: nn.Module, decay: float, *, sharded: bool, warmup: bool = False) -> Any:
    """The EMA of ``module`` (None when ``decay`` is 0): :class:`ShardedEMA` under FSDP2,
    else ``AveragedModel`` over parameters and buffers; ``warmup``: the decay warms up
    (:func:`ema_decay_at`)."""
    if decay <= 0:
        return None
    if sharded:
        return ShardedEMA(module, decay, warmup=warmup)
    from torch.optim.swa_utils import AveragedModel

    return AveragedModel(module, multi_avg_fn=_ema_update(decay, warmup), use_buffers=True)


class ShardedEMA:
    """Exponential moving average of an FSDP2 model, shard by shard."""

    def __init__(self, module: nn.Module, decay: float, *, warmup: bool = False) -> None:
        self.decay, self.warmup = decay, warmup
        self.n_averaged = 0
        self.keys = set(module.state_dict())  # parameters and persistent buffers
        self.shadow = {n: t.detach().clone() for n, t in self._tensors(module)}

    def _tensors(self, module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        yield from module.named_parameters()
        yield from ((n, b) for n, b in module.named_buffers() if n in self.keys)

    @torch.no_grad()
    def update_parameters(self, module: nn.Module) -> None:
        decay = ema_decay_at(self.decay, self.n_averaged, warmup=self.warmup)
        for name, t in self._tensors(module):
            ema = self.shadow[name]
            if self.n_averaged == 0 or not ema.is_floating_point():
                ema.copy_(t.detach())
            else:
                ema.lerp_(t.detach(), 1 - decay)
        self.n_averaged += 1

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """``module`` with the average in place of its weights, restored afterwards."""
        reshard(module)
        saved = {}
        with torch.no_grad():
            for name, t in self._tensors(module):
                saved[name] = t.detach().clone()
                t.copy_(self.shadow[name])
        try:
            yield module
        finally:
            reshard(module)  # a forward may leave the root's parameters gathered
            with torch.no_grad():
                for name, t in self._tensors(module):
                    t.copy_(saved[name])

    def module_state(self) -> dict[str, torch.Tensor]:
        """The average as the model's full state dict (a collective)."""
        return {n: _full(t) for n, t in self.shadow.items()}

    def shards(self) -> dict[str, torch.Tensor]:
        """``AveragedModel``'s keys, this rank's shards (DTensors): what a sharded checkpoint
        writes and :meth:`load_shards` reads back."""
        return {"n_averaged": torch.tensor(self.n_averaged), **{
            f"module.{n}": t for n, t in self.shadow.items()}}  # fmt: skip

    def load_shards(self, state: dict[str, torch.Tensor]) -> None:
        """After ``dcp.load`` filled :meth:`shards` in place: the counter."""
        self.n_averaged = int(state["n_averaged"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``AveragedModel``'s keys, full tensors (a collective)."""
        state = {f"module.{n}": _full(t) for n, t in self.shadow.items()}
        return {"n_averaged": torch.tensor(self.n_averaged), **state}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.tensor import distribute_tensor

        for name, ema in self.shadow.items():
            full = state[f"module.{name}"].to(ema.dtype)
            if hasattr(ema, "device_mesh"):
                full = distribute_tensor(full.to(ema.device), ema.device_mesh, ema.placements)
            ema.copy_(full)
        self.n_averaged = int(state["n_averaged"])
