"""Data-parallel training on several processes: torchrun, DDP and FSDP2.

    torchrun --nproc-per-node N -m atoken.cli train RUN.toml     (or atoken train --nproc N)

Every process runs the same run file. torchrun sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` joins the process group (gloo on the CPU, nccl on CUDA, with the
run file's collective timeout) and each data source draws from its rank's share of the
samples (:class:`atoken.data.SourceContext`). :func:`wrap` shards or replicates the model:

    ddp    the whole model on every rank (broadcast from rank 0 when a stage starts); after a
           step's micro-steps the gradients are all-reduced and averaged in flat buckets
           (:func:`sync_gradients`: DistributedDataParallel's reduction, without its autograd
           hooks, which refuse a parameter used twice in one step, e.g. a head per tile)
    fsdp   FSDP2 ``fully_shard`` on every transformer block, then on the root, with
           ``MixedPrecisionPolicy(param_dtype, reduce_dtype=float32)``; the tokenizer's
           entry points other than ``forward`` (encode, decode, ...) are registered with
           ``register_fsdp_forward_method`` so they gather the root's parameters too, and
           with bf16 parameters ``forward`` and those run under bf16 autocast (the float
           activations they make inside, from patches or latents, meet bf16 weights)

The loss of a micro-step is normalised by the global count of what it averages (tokens, or
samples: :func:`global_share`), so N ranks compute the gradient of one process holding the
whole global batch. Nothing here imports a modality or a task.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import nn

from atoken.core.errors import AtokenError, ConfigError
from atoken.core.transformer import Block, Transformer
from atoken.engine.run_sections import DistributedConfig

__all__ = [
    "FSDP_METHODS",
    "CollectiveTimeoutError",
    "Dist",
    "StopSignal",
    "TrainingStopped",
    "all_reduce_sum",
    "barrier",
    "broadcast_module",
    "collective",
    "global_share",
    "on_main",
    "round_store",
    "setup",
    "share_object",
    "sync_gradients",
    "wrap",
]

#: Tokenizer entry points other than ``forward`` that run the model under FSDP2.
FSDP_METHODS = ("encode", "decode", "autoencode", "reconstruct", "embed", "tokenize", "detokenize")


class CollectiveTimeoutError(AtokenError, RuntimeError):
    """A collective waited longer than ``[distributed] timeout``: a rank hung or died."""


class TrainingStopped(AtokenError, SystemExit):
    """The run was asked to stop (SIGTERM) and saved a checkpoint first; ``code`` is 143."""

    def __init__(self, message: str) -> None:
        AtokenError.__init__(self, message)
        self.code = 128 + signal.SIGTERM


class StopSignal:
    """Catches SIGTERM (torchrun's, a scheduler's) while training so the loop can save a
    checkpoint and stop; the previous handler is restored on exit. Only the main thread
    can install a handler; elsewhere it stays inert."""

    def __init__(self) -> None:
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self, d: Dist) -> bool:
        """Whether any rank received it (a collective on several processes)."""
        if not d.active:
            return self.received
        return float(all_reduce_sum(float(self.received), d, "checking for a stop signal")) > 0


@attrs.frozen
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (``local_rank`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    timeout: float = 600.0  # seconds a collective waits ([distributed] timeout)

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes logs, pictures, checkpoints' metadata and exports."""
        return self.rank == 0


def setup(cfg: DistributedConfig, device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else stay alone.

    Returns ``(Dist, device)``; on CUDA the device is ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: a backend that cannot serve the device (nccl on the CPU), or torchrun's
            variables are inconsistent.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("[distributed] backend = 'nccl' needs CUDA; use 'gloo' on the CPU")
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=cfg.timeout)
        # the small collectives (counts, flags, objects) run on CPU tensors: gloo serves them
        spec = "cpu:gloo,cuda:nccl" if backend == "nccl" else backend
        store = round_store(rank, world, timeout)
        if store is None:
            dist.init_process_group(spec, timeout=timeout)
        else:
            dist.init_process_group(spec, timeout=timeout, store=store, rank=rank, world_size=world)
        atexit.register(_leave)  # the group this process joined, left before teardown
    d = Dist(
        rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, timeout=cfg.timeout
    )
    return d, device


def round_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store | None:
    """The store this restart round of a torchrun group meets in: torchrun's own store under a
    prefix of its own, or None where ``init_process_group``'s ``env://`` store is already new.

    torchrun's agent keeps one store for the whole run and hands it to every round of workers
    it starts (``TORCHELASTIC_USE_AGENT_STORE=True``, the default since torch 2.5). The keys
    the killed round wrote stay in it: a restarted rank that reads them before its peer
    rewrites them connects gloo's full mesh to the dead process's port ("Connection refused",
    pytorch #135712; on this 2-core machine 8 of 10 kill-restart runs with one restart
    allowed failed so, 0 of 20 with the prefix). Each round therefore meets
    under ``atoken/round_<TORCHELASTIC_RESTART_COUNT>/``. That count is the same on every rank
    only when one agent starts them all (one node): on several nodes it is not (pytorch
    #108158), so there the rounds need torchrun's own per-round store,
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` in torchrun's environment on every node;
    without it a multi-node run that may restart gets a warning.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None  # a plain env:// launch, or torchrun with a new store every round
    if int(os.environ.get("LOCAL_WORLD_SIZE", world)) != world:
        if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0:
            warnings.warn(
                "torchrun on several nodes with --max-restarts and its store shared across "
                "restarts: a restarted round can read the failed round's keys and fail to "
                "connect (pytorch #135712); set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in "
                "torchrun's environment on every node",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
    store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
    store.set_timeout(timeout)
    round_ = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    return dist.PrefixStore(f"atoken/round_{round_}", store)


def _leave() -> None:
    """Destroy the process group at exit. Left to the interpreter's teardown, gloo's threads
    can be destroyed while joinable, and the process aborts ("terminate called without an
    active exception") after its work is done."""
    if not dist.is_initialized():
        return
    # leave together (a rank still at work keeps the group's threads busy); a peer already
    # gone (a failed run) is waited for 10 s at most
    with contextlib.suppress(Exception):
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=10))
    dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor | float, d: Dist, what: str = "a sum") -> torch.Tensor:
    """``value`` summed over the ranks (a float64 tensor on the CPU; itself on one process)."""
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone().cpu()
    if d.active:
        with collective(what, d):
            dist.all_reduce(t)
    return t


def global_share(count: float, d: Dist) -> float:
    """The factor that turns this rank's mean over ``count`` items into its share of the mean
    over all ranks' items: ``count * world / sum(counts)`` (gradients are then averaged over
    the ranks, which gives the global mean)."""
    if not d.active:
        return 1.0
    total = float(all_reduce_sum(float(count), d, "counting the global batch"))
    return count * d.world / total if total > 0 else 0.0


@contextmanager
def collective(what: str, d: Dist) -> Iterator[None]:
    """Name a collective that failed (a peer died, or hung past ``d.timeout`` seconds)."""
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as exc:  # gloo/nccl report timeouts so
        if not d.active:
            raise
        raise CollectiveTimeoutError(
            f"rank {d.rank} of {d.world}: {what} failed waiting for the other ranks "
            f"([distributed] timeout = {d.timeout:g} s); a rank hung or died: {exc}"
        ) from exc


def barrier(d: Dist, what: str) -> None:
    """Wait for every rank (at ``what``, named if a rank never arrives)."""
    if d.active:
        with collective(what, d):
            dist.barrier()


def share_object(obj: Any, d: Dist, what: str) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object)."""
    if not d.active:
        return obj
    box = [obj]
    with collective(what, d):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: nn.Module, d: Dist) -> None:
    """Rank 0's parameters and buffers on every rank."""
    if not d.active:
        return
    with torch.no_grad(), collective("sharing rank 0's weights", d):
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


#: Bytes per all-reduce bucket of :func:`sync_gradients`.
BUCKET_BYTES = 25 * 2**20


def sync_gradients(module: nn.Module, d: Dist) -> None:
    """Average the gradients of ``module``'s trainable parameters over the ranks, bucket by
    bucket of one dtype and device; a parameter without a gradient on some rank counts as zero
    there, and one without a gradient on every rank keeps none (AdamW skips it)."""
    if not d.active:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    has = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64)
    with collective("finding the parameters with gradients", d):
        dist.all_reduce(has)  # a parameter no rank used keeps no gradient (as on one process)
    params = [p for p, n in zip(params, has.tolist(), strict=True) if n > 0]
    for p in params:
        if p.grad is None:  # used on another rank: this rank's share is zero
            p.grad = torch.zeros_like(p)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    for p in params:
        key = (p.grad.dtype, p.grad.device)
        groups = buckets.setdefault(key, [[]])
        if sum(g.numel() * g.element_size() for g in groups[-1]) > BUCKET_BYTES:
            groups.append([])
        groups[-1].append(p.grad)
    for groups in buckets.values():
        for grads in groups:
            flat = torch.cat([g.reshape(-1) for g in grads])  # [sum numel]
            with collective("averaging the gradients", d):
                dist.all_reduce(flat)
            flat /= d.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def on_main(fn: Any, d: Dist, what: str) -> Any:
    """``fn()`` on rank 0 only; its result on every rank. An exception on rank 0 is raised on
    every rank (the others would otherwise wait at the next collective until the timeout)."""
    result, error = None, None
    if d.main:
        try:
            result = fn()
        except Exception as exc:  # shared, then raised everywhere
            if not d.active:
                raise
            error = exc
    shared = share_object((result, None if error is None else repr(error)), d, what)
    if error is not None:
        raise error
    if shared[1] is not None:
        raise RuntimeError(f"rank 0 failed at {what}: {shared[1]}")
    return shared[0]


def _fsdp(model: nn.Module, cfg: DistributedConfig, device: torch.device, bf16: bool) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))  # explicit: pytorch #132471
    use_bf16 = cfg.param_dtype == "bf16" or (cfg.param_dtype == "auto" and bf16)
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if use_bf16 else None, reduce_dtype=torch.float32
    )
    kwargs = dict(mesh=mesh, mp_policy=policy, reshard_after_forward=cfg.reshard_after_forward)
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, **kwargs)
    # the root keeps its parameters gathered from forward to backward: the heads slice them
    # (a partial head reads the first rows of its weight), views a reshard would free
    fully_shard(model, **{**kwargs, "reshard_after_forward": False})
    for name in FSDP_METHODS:
        if callable(getattr(model, name, None)):
            register_fsdp_forward_method(model, name)
    if use_bf16:  # the entry points make fp32 activations inside (patches, latents, ...)
        for name in ("forward", *FSDP_METHODS):
            if callable(method := getattr(model, name, None)):
                setattr(model, name, _in_autocast(method, device))
    return model


def _in_autocast(method: Any, device: torch.device) -> Any:
    """``method`` under bf16 autocast: fp32 activations meet the gathered bf16 weights."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return method(*args, **kwargs)

    return run


def wrap(
    model: nn.Module, d: Dist, cfg: DistributedConfig, device: torch.device, bf16: bool = False
) -> nn.Module:
    """The model as this run trains it: itself on one process, DDP or FSDP2 on several.

    ``activation_checkpointing`` turns on every transformer's block recomputation first (the
    order FSDP2 needs). ``bf16``: whether bf16 is fast here (``param_dtype = "auto"``).
    """
    if cfg.activation_checkpointing:
        for module in model.modules():
            if isinstance(module, Transformer):
                module.grad_checkpointing = True
    if not d.active:
        return model
    broadcast_module(model, d)  # every rank starts from rank 0's weights
    if cfg.strategy == "fsdp":
        return _fsdp(model, cfg, device, bf16)
    return model
