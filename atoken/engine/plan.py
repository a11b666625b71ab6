"""A run's plan before its launch: parameters, tokens, FLOPs and memory per rank, per stage.

    from atoken.engine.runconfig import load_run_file
    from atoken.engine.plan import plan_run

    plan = plan_run(load_run_file("configs/paper/so-c.toml"), nproc=256)
    for stage in plan.stages:
        stage.trainable, stage.tokens_per_step, stage.flops_per_step, stage.fsdp.total

``atoken train RUN.toml --plan [--nproc N]`` prints it (:mod:`atoken.cli.plan`). Nothing is
trained, allocated or downloaded, and no data is read:

* each stage's tokenizer is built on the meta device as the run builds it (``[model]``, then
  the stage's transforms through their ``apply_shapes``, :mod:`atoken.engine.transforms`), so the
  parameter counts are exact and a so400m plan costs no memory;
* a task's micro-batch comes from its table (the task class's ``plan_batch``,
  :mod:`atoken.tasks.planning`): ``samples`` per rank and the tokens of a sample;
* frozen networks (the losses' networks, a frozen text tower) are counted by their
  ``planned_parameters`` / ``planned`` class methods, without their weights; a component
  without one is built on the meta device, and one that cannot be is named in ``notes``.

Per optimizer step, over all N ranks: with ``grad_accum`` A and n tasks a task trains
``m = A / n`` micro-batches (``round_robin``; ``weighted``: ``A w_i / sum w``), so

    samples/step = N sum_i m_i B_i        tokens/step = N sum_i m_i B_i t_i

(B_i samples per rank and micro-batch, t_i their mean tokens). FLOPs and activations:
:mod:`atoken.engine.plan_formulas`. Memory per rank, in bytes (weights, gradients, AdamW's two
moments and the EMA are fp32; b = 2 in bf16, 4 in fp32):

    item            DDP                     FSDP2 (fully_shard per block, then the root)
    parameters      4 P                     4 P / N
    gradients       4 P                     4 P / N
    optimizer       8 P                     8 P / N
    EMA             4 P                     4 P / N      (0 when [train] ema_decay = 0)
    frozen          4 F                     4 F          (not sharded)
    for compute     2 (P + F) in bf16       b (R + 2 K) + 4 (R + K) + 2 F in bf16
    activations     the largest micro-batch of the stage (plan_formulas.activation_bytes)

P trainable and F frozen parameters; R the root unit's parameters (all outside the blocks:
gathered from forward to backward), K the largest block's (one computing, one prefetched,
and its unsharded fp32 gradient before the reduce-scatter). "For compute" under DDP are the
bf16 copies autocast makes of the weights, alive until the backward pass.

The precision: ``[train] precision`` (``auto`` is bf16, as on a GPU, unless ``[train] device
= "cpu"`` on a CPU without native bf16); under FSDP2 ``[distributed] param_dtype`` too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from atoken.core.errors import AtokenError, ConfigError
from atoken.core.transformer import Block
from atoken.engine.device import fast_bf16
from atoken.engine.plan_formulas import activation_bytes, numel, training_flops
from atoken.engine.runconfig import RunConfig, StageSpec, TaskSpec
from atoken.plugins.manager import get_registry

__all__ = [
    "MemoryPlan",
    "RunPlan",
    "StagePlan",
    "TaskPlan",
    "apply_shapes",
    "meta_tokenizer",
    "plan_run",
]

#: Loss inputs that need no decoded samples (every other kind decodes).
_NOT_DECODED = ("terms", "latent", "embeddings")


@attrs.frozen(kw_only=True)
class TaskPlan:
    """One task of a stage: ``samples`` per rank per micro-batch of ``tokens_mean`` tokens
    each on average (``tokens_max`` at the largest size), ``micro_batches`` per optimizer
    step, whether it decodes and embeds, and its model FLOPs per micro-batch and rank."""

    label: str
    samples: int
    tokens_mean: float
    tokens_max: int
    micro_batches: float
    decodes: bool
    embeds: bool
    flops: float


@attrs.frozen(kw_only=True)
class MemoryPlan:
    """Bytes per rank under one strategy (see the module docstring for each item)."""

    parameters: int
    gradients: int
    optimizer: int
    ema: int
    frozen: int
    compute: int
    activations: int

    @property
    def total(self) -> int:
        """All of it."""
        return sum(attrs.astuple(self))


@attrs.frozen(kw_only=True)
class StagePlan:
    """One stage: its parameters, its work per optimizer step over all ranks (``samples``,
    ``tokens``, model ``flops``) and its memory per rank under DDP and FSDP2."""

    name: str
    steps: int
    trainable: int
    frozen: int
    samples_per_step: float
    tokens_per_step: float
    flops_per_step: float
    tasks: tuple[TaskPlan, ...]
    ddp: MemoryPlan
    fsdp: MemoryPlan


@attrs.frozen(kw_only=True)
class RunPlan:
    """The plan of a run on ``nproc`` ranks: its stages, the precisions it was planned at and
    what it could not count (``notes``)."""

    nproc: int
    bf16: bool
    fsdp_bf16: bool
    activation_checkpointing: bool
    stages: tuple[StagePlan, ...]
    notes: tuple[str, ...] = ()


def _bf16(choice: str, device: str) -> bool:
    if choice != "auto":
        return choice == "bf16"
    return fast_bf16(torch.device("cpu")) if device == "cpu" else True


def _text_tower(name: str, params: Mapping[str, Any]) -> tuple[int, int]:
    """(dim, parameters) of a text encoder, without its weights."""
    factory = get_registry().text_encoders.get(name)
    planned = getattr(factory, "planned", None)
    if planned is not None:
        return planned(**params)
    try:
        encoder = factory(**params)  # the weights load on first use: dim is known now
        return int(encoder.dim), numel(encoder.load() if hasattr(encoder, "load") else encoder)
    except AtokenError as exc:
        raise ConfigError(
            f"[model] text_encoder {name!r} has no planned() and cannot be built here: {exc}"
        ) from exc


class _Stand(nn.Module):
    """``n`` parameters standing in for a module counted without being built."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n))


def meta_tokenizer(cfg: RunConfig) -> tuple[nn.Module, int]:
    """The run's first tokenizer, shape-only (build it under ``torch.device("meta")``), and
    its frozen text tower's parameters (counted, not built)."""
    from atoken.core.semantic import SemanticProjection
    from atoken.run_model import model_config
    from atoken.tokenizer import Tokenizer

    config = model_config(cfg)  # a checkpoint's config.json only: no weight is read
    text, text_params = config.text_encoder or "", dict(config.text_encoder_params)
    tokenizer = Tokenizer(config.with_overrides(text_encoder=None, text_encoder_params={}))
    frozen = 0
    if text:
        if not tokenizer.config.encoder.map_head:
            raise ConfigError("a text encoder needs the MAP head (encoder.map_head=True)")
        dim, tower = _text_tower(text, text_params)
        tokenizer.semantic = SemanticProjection(tokenizer.config.encoder.backbone.width, dim)
        if text_params.get("trainable", False):  # a submodule: trained, sharded, saved
            tokenizer.text_tower = _Stand(tower)
        else:
            frozen = tower
    return tokenizer, frozen


def _loss_networks(spec: TaskSpec, factory: Any, notes: list[str]) -> tuple[int, set[str]]:
    """(frozen parameters of the task's losses, the inputs they consume)."""
    registry = get_registry().losses
    terms = factory.default_losses if spec.losses is None else spec.losses
    frozen, inputs, through = 0, set(), []
    for term in terms:
        loss = registry.get(term.name)
        kind = str(getattr(loss, "inputs", "samples"))
        inputs.add(kind)
        planned = getattr(loss, "planned_parameters", None)
        try:
            if planned is not None:
                count = int(planned(**dict(term.params)))
            else:
                with torch.device("meta"):
                    built = loss(**dict(term.params))
                count = numel(built) if isinstance(built, nn.Module) else 0
        except AtokenError as exc:
            notes.append(f"[[tasks]] {spec.key}: loss {term.name!r} not counted: {exc}")
            continue
        frozen += count
        if count and kind not in _NOT_DECODED:  # the prediction's gradient runs through it
            through.append(term.name)
    if through:
        notes.append(
            f"[[tasks]] {spec.key}: the activations inside the frozen networks of "
            f"{', '.join(through)} (the prediction's gradient runs through them) are not counted"
        )
    return frozen, inputs


def _modality(spec: TaskSpec, factory: Any, tokenizer: nn.Module) -> str | None:
    """The task's modality when the table, the task or its source's class says it."""
    name = spec.modality or getattr(factory, "default_modality", "") or spec.data.get("modality")
    source = get_registry().data_sources
    if not name and spec.data.get("source") in source:
        found = source.get(spec.data["source"])
        if attrs.has(found):
            field = attrs.fields_dict(found).get("modality")
            name = field.default if field is not None and isinstance(field.default, str) else ""
    try:
        return name if name and tokenizer.modality(name) is not None else None
    except AtokenError:
        return None


def _micro_batches(stage: StageSpec, cfg: RunConfig) -> list[float]:
    accum = cfg.stage_optim(stage).grad_accum
    if (stage.mixture or cfg.train.mixture) == "weighted":
        total = sum(t.weight for t in stage.tasks)
        return [accum * t.weight / total for t in stage.tasks]
    return [accum / len(stage.tasks)] * len(stage.tasks)


def _plan_task(
    spec: TaskSpec, tokenizer: nn.Module, micro: float, notes: list[str]
) -> tuple[TaskPlan, int]:
    registry = get_registry()
    if spec.data.get("source") and spec.data["source"] not in registry.data_sources:
        notes.append(
            f"[[tasks]] {spec.key}: data source {spec.data['source']!r} is not registered here "
            "(planned from its table; install its plugin before the launch)"
        )
    factory = registry.tasks.get(spec.name)
    plan_batch = getattr(factory, "plan_batch", None)
    if plan_batch is None:
        raise ConfigError(
            f"[[tasks]] {spec.key}: task {spec.name!r} (plugin "
            f"{registry.tasks.plugin_of(spec.name)!r}) has no plan_batch: it cannot be planned"
        )
    shape = plan_batch(spec, tokenizer.config)
    if shape.note:
        notes.append(f"[[tasks]] {spec.key}: {shape.note}")
    frozen, inputs = _loss_networks(spec, factory, notes)
    decodes = any(i not in _NOT_DECODED for i in inputs)
    embeds = "embeddings" in inputs
    flops = training_flops(
        tokenizer,
        shape.samples * shape.tokens_mean,
        shape.samples * shape.tokens_sq_mean,
        modality=_modality(spec, factory, tokenizer),
        decode=decodes,
        embed=embeds,
    )
    task = TaskPlan(
        label=spec.key,
        samples=shape.samples,
        tokens_mean=shape.tokens_mean,
        tokens_max=shape.tokens_max,
        micro_batches=micro,
        decodes=decodes,
        embeds=embeds,
        flops=flops,
    )
    return task, frozen


def _memory(
    cfg: RunConfig,
    tokenizer: nn.Module,
    tasks: list[TaskPlan],
    frozen: int,
    *,
    nproc: int,
    bf16: bool,
    fsdp: bool,
) -> MemoryPlan:
    trainable = sum(p.numel() for p in tokenizer.parameters() if p.requires_grad)
    share = math.ceil(trainable / nproc) if fsdp else trainable
    checkpointing = cfg.distributed.activation_checkpointing
    activations = max(
        activation_bytes(
            tokenizer,
            t.samples * t.tokens_max,
            decode=t.decodes,
            bf16=bf16,
            checkpointing=checkpointing,
        )
        for t in tasks
        if t.micro_batches > 0
    )
    compute = 2 * frozen if bf16 else 0
    if fsdp:
        blocks = [numel(b) for b in tokenizer.modules() if isinstance(b, Block)]
        root, block = numel(tokenizer) - sum(blocks), max(blocks, default=0)
        gathered = root + (2 * block if cfg.distributed.reshard_after_forward else sum(blocks))
        compute += (2 if bf16 else 4) * gathered + 4 * (root + block)
    elif bf16:
        compute += 2 * trainable
    return MemoryPlan(
        parameters=4 * share,
        gradients=4 * share,
        optimizer=8 * share,
        ema=4 * share if cfg.train.ema_decay > 0 else 0,
        frozen=4 * frozen,
        compute=compute,
        activations=int(activations),
    )


def apply_shapes(
    transform: Any, tokenizer: nn.Module, stage: StageSpec, index: int, *, call: bool = True
) -> bool:
    """Change a shape-only ``tokenizer`` as ``transform`` (of stage ``index``) will change the
    real one: its ``apply_shapes``, else (``call``) the transform itself with no tasks.
    Returns whether anything was applied."""
    from atoken.engine.transforms import StageContext

    shapes = getattr(transform, "apply_shapes", None)
    if shapes is not None:
        shapes(tokenizer)
    elif call:
        transform(tokenizer, StageContext(stage=stage, index=index))
    return shapes is not None or call


def plan_run(cfg: RunConfig, *, nproc: int = 1) -> RunPlan:
    """The plan of ``cfg`` on ``nproc`` ranks (see the module docstring).

    Raises:
        ConfigError: ``nproc < 1``, a task that cannot be planned (its table lacks a batch
            size or a sample size its source does not default), a transform's bad parameter.
        UnknownComponentError: a task, loss, transform or text encoder no plugin registered.
    """
    from atoken.run_model import build_transforms

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--plan: nproc must be an int >= 1, got {nproc!r}")
    bf16 = _bf16(cfg.train.precision, cfg.train.device)
    fsdp_bf16 = bf16 or _bf16(cfg.distributed.param_dtype, cfg.train.device)
    notes: list[str] = []
    stages = []
    transforms = build_transforms(cfg)  # unknown names and bad parameters fail here
    with torch.device("meta"):
        tokenizer, text_frozen = meta_tokenizer(cfg)
        for index, stage in enumerate(cfg.plan()):
            for spec, transform in zip(stage.transforms, transforms[index], strict=True):
                try:
                    apply_shapes(transform, tokenizer, stage, index)
                except AtokenError as exc:
                    notes.append(
                        f"[[stages]] {stage.name!r}: transform {spec.name!r} not applied to the "
                        f"plan ({exc}); the stage is planned with the previous shapes"
                    )
            micro = _micro_batches(stage, cfg)
            tasks, frozen = [], text_frozen
            for spec, m in zip(stage.tasks, micro, strict=True):
                task, loss_frozen = _plan_task(spec, tokenizer, m, notes)
                tasks.append(task)
                frozen += loss_frozen
            trainable = sum(p.numel() for p in tokenizer.parameters() if p.requires_grad)
            frozen += sum(p.numel() for p in tokenizer.parameters() if not p.requires_grad)
            stages.append(
                StagePlan(
                    name=stage.name,
                    steps=stage.steps,
                    trainable=trainable,
                    frozen=frozen,
                    samples_per_step=nproc * sum(t.micro_batches * t.samples for t in tasks),
                    tokens_per_step=nproc
                    * sum(t.micro_batches * t.samples * t.tokens_mean for t in tasks),
                    flops_per_step=nproc * sum(t.micro_batches * t.flops for t in tasks),
                    tasks=tuple(tasks),
                    ddp=_memory(cfg, tokenizer, tasks, frozen, nproc=nproc, bf16=bf16, fsdp=False),
                    fsdp=_memory(
                        cfg, tokenizer, tasks, frozen, nproc=nproc, bf16=fsdp_bf16, fsdp=True
                    ),
                )
            )
    return RunPlan(
        nproc=nproc,
        bf16=bf16,
        fsdp_bf16=fsdp_bf16,
        activation_checkpointing=cfg.distributed.activation_checkpointing,
        stages=tuple(stages),
        notes=tuple(dict.fromkeys(notes)),
    )
