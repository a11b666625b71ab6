"""The sections of a run file: one frozen attrs class each, validated at construction.

``[run]`` :class:`RunSection`, ``[model]`` :class:`ModelConfig`, ``[optim]``
:class:`OptimConfig`, ``[train]`` :class:`TrainConfig`, ``[log]`` :class:`LogConfig`, one
``[[tasks]]`` table :class:`TaskSpec` (its ``losses`` entries :class:`LossTerm`), one
``[[stages]]`` table :class:`StageSpec` (its ``transforms`` entries :class:`TransformSpec`).
A bad value is a ``ConfigError`` naming the field; :mod:`atoken.engine.runconfig` structures a
TOML file into them and adds the section to the message.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from atoken.core.config import override_keys
from atoken.core.errors import ConfigError
from atoken.core.validators import check_path_name, path_name

__all__ = [
    "DistributedConfig",
    "LogConfig",
    "LossTerm",
    "ModelConfig",
    "OptimConfig",
    "RunSection",
    "StageSpec",
    "TaskSpec",
    "TrainConfig",
    "TransformSpec",
    "distinct_labels",
]


def _number(attribute: attrs.Attribute, value: Any) -> None:
    """A finite number of the field's declared kind (``int`` fields take ints only; no bools)."""
    integral = attribute.type == "int"  # annotations are strings here
    ok = not isinstance(value, bool) and isinstance(value, int if integral else (int, float))
    if not ok or not math.isfinite(value):
        kind = "an int" if integral else "a finite number"
        raise ConfigError(f"{attribute.name} must be {kind}, got {value!r}")


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _number(attribute, value)
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _number(attribute, value)
    if not value >= 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value!r}")


def _decay(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _non_negative(instance, attribute, value)
    if not value < 1:
        raise ConfigError(f"{attribute.name} must be in [0, 1) (0: off), got {value!r}")


def _integer(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    _number(attribute, value)


_str = attrs.validators.instance_of(str)
_bool = attrs.validators.instance_of(bool)


def _one_of(*choices: str):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {choices}, got {value!r}")

    return check


def _tuple(value: Any) -> tuple:
    return tuple(value)


@attrs.frozen(kw_only=True)
class RunSection:
    """``[run]``: name, output folder and seed. ``name`` is a folder name (the default
    ``out_dir`` is ``runs/<name>``): :data:`~atoken.core.validators.PATH_NAME_RULE`."""

    name: str = attrs.field(default="run", validator=path_name)
    out_dir: str = attrs.field(default="", validator=_str)  # default: runs/<name>
    seed: int = attrs.field(default=0, validator=_integer)

    @property
    def output(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}")


#: ``[model]`` keys that describe the run's start, not the tokenizer (every other key is a
#: :class:`~atoken.core.config.TokenizerConfig` key).
MODEL_RUN_KEYS = ("preset", "init_from", "pca_init", "expand_latent", "overrides")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """``[model]``: where the tokenizer starts, and tokenizer config keys passed verbatim.

    ``preset`` (or ``init_from``, a folder ``save_pretrained`` wrote) is the start; every
    other key is a flat :class:`~atoken.core.config.TokenizerConfig` key
    (:meth:`~atoken.core.config.TokenizerConfig.with_overrides`) set over it as written:
    ``latent_dim = 48``, ``bottleneck = "fsq"``, ``modalities = ["image", "pointcloud"]``,
    ``modality_params = { depth = { depth_mean = 2.5 } }``, ``decoder_depth = 2``. A key left
    out keeps the preset's value (``preset = "atoken-so"`` trains its 48 channels). TOML has
    no null: ``text_encoder = ""`` or ``attention = ""`` means none. The older
    ``overrides = { ... }`` table holds the same keys. In the parsed config all of them are in
    ``overrides`` (:meth:`tokenizer_overrides`).
    """

    preset: str = "tiny"
    init_from: str = ""  # a checkpoint folder (save_pretrained) to start from
    # start as the PCA tokenizer of the training crops (atoken.engine.pca_init); needs the overrides
    # final_norm = false, decoder_final_norm = false, decoder_bias = true
    pca_init: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    # widen the kl latent to this many channels before training (stage 2: 32 -> 48; the
    # decoder's output is unchanged at the start, atoken.engine.transforms.expand_latent); 0: keep
    expand_latent: int = attrs.field(default=0, validator=_non_negative)
    overrides: Mapping[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.pca_init and self.init_from:
            raise ConfigError("[model] pca_init and init_from exclude each other: pick one start")
        if not isinstance(self.overrides, Mapping):
            raise ConfigError(f"overrides must be a table, got {self.overrides!r}")
        known = override_keys()
        for key in self.overrides:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known | set(MODEL_RUN_KEYS)), 3)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ConfigError(
                    f"unknown key {key!r}: not a tokenizer config key nor one of "
                    f"{list(MODEL_RUN_KEYS)}.{hint}"
                )

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ModelConfig:
        """A ``[model]`` table: its run keys, and every other key into ``overrides``.

        Raises:
            ConfigError: a key given both at the top and in ``overrides``, or unknown.
        """
        own = {k: v for k, v in table.items() if k in MODEL_RUN_KEYS and k != "overrides"}
        inner = table.get("overrides", {})
        if not isinstance(inner, Mapping):
            raise ConfigError(f"overrides must be a table, got {inner!r}")
        top = {k: v for k, v in table.items() if k not in MODEL_RUN_KEYS}
        twice = sorted(set(top) & set(inner))
        if twice:
            raise ConfigError(f"{twice} given both as keys and in overrides: keep one")
        return cls(**own, overrides={**inner, **top})

    def tokenizer_overrides(self) -> dict[str, Any]:
        """The tokenizer config keys, ready for ``with_overrides`` ("" as none for the keys
        whose "none" is null)."""
        return {k: (None if v == "" and k in _NULLABLE else v) for k, v in self.overrides.items()}

    def get(self, key: str, default: Any = None) -> Any:
        """The tokenizer config key ``key`` as the run file sets it, else ``default``."""
        return self.overrides.get(key, default)


#: Tokenizer config keys whose "none" is null, which TOML cannot write: "" stands for it.
_NULLABLE = frozenset({"attention", "text_encoder", "default_modality", "tile_steps"})


@attrs.frozen(kw_only=True)
class OptimConfig:
    """``[optim]``: AdamW, warmup then cosine, clipping and accumulation."""

    lr: float = attrs.field(default=3e-4, validator=_positive)
    min_lr: float = attrs.field(default=3e-5, validator=_non_negative)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.95), converter=_tuple)
    weight_decay: float = attrs.field(default=0.1, validator=_non_negative)
    warmup_steps: int = attrs.field(default=100, validator=_non_negative)
    # the schedule's length, warmup included (0: the stage's steps); a resume whose [train]
    # steps changed keeps the checkpoint's unless --reschedule (atoken.engine.run_changes)
    schedule_steps: int = attrs.field(default=0, validator=_non_negative)
    encoder_lr_mult: float = attrs.field(default=0.1, validator=_positive)
    grad_clip: float = attrs.field(default=1.0, validator=_non_negative)  # 0: off
    grad_accum: int = attrs.field(default=1, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")


@attrs.frozen(kw_only=True)
class TrainConfig:
    """``[train]``: length, precision, EMA, evaluation, checkpoints, guards and data workers."""

    steps: int = attrs.field(default=1000, validator=_positive)
    max_minutes: float = attrs.field(default=0.0, validator=_non_negative)  # 0: no limit
    precision: str = attrs.field(default="auto", validator=_one_of("auto", "bf16", "fp32"))
    ema_decay: float = attrs.field(default=0.999, validator=_decay)  # 0: off
    # timm-style warmup: update n uses min(ema_decay, (1 + n) / (10 + n)), so a short run's
    # EMA follows the live weights instead of staying near its start
    ema_warmup: bool = attrs.field(default=True, validator=_bool)
    eval_every: int = attrs.field(default=0, validator=_non_negative)  # 0: only at the end
    checkpoint_every: int = attrs.field(default=0, validator=_non_negative)
    keep_checkpoints: int = attrs.field(default=2, validator=_positive)
    # "full": rank 0 writes step_N.pt with the gathered tensors; "sharded": every rank writes
    # its shards into the folder step_N/ (torch.distributed.checkpoint); either resumes on M
    checkpoint_format: str = attrs.field(default="full", validator=_one_of("full", "sharded"))
    log_every: int = attrs.field(default=10, validator=_positive)
    max_nonfinite: int = attrs.field(default=5, validator=_positive)
    progress: bool = attrs.field(default=True, validator=_bool)
    # "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:N"; --device overrides
    device: str = attrs.field(default="auto", validator=attrs.validators.instance_of(str))
    # how the [[tasks]] share the micro-steps: "round_robin" (micro-step k trains task
    # k mod N, its loss scaled by the task's weight) or "weighted" (task drawn with
    # probability weight / sum of weights, loss unscaled); set [optim] grad_accum = N for one
    # micro-batch of every task per optimizer step
    mixture: str = attrs.field(default="round_robin", validator=_one_of("round_robin", "weighted"))
    # worker processes that compute the coming batches ahead of the loop (0: in the training
    # process); the batches are the same for any number (atoken.engine.prefetch)
    data_workers: int = attrs.field(default=2, validator=_non_negative)
    # unreadable samples (truncated, undecodable, missing their key) a streaming source skips
    # with a warning before the run fails naming the shard and the key (0: fail on the first)
    max_bad_samples: int = attrs.field(default=16, validator=_non_negative)


@attrs.frozen(kw_only=True)
class LogConfig:
    """``[log]``: loggers beside ``metrics.jsonl``, each a plugin on the lifecycle hooks.

    ``tensorboard = true``: the built-in TensorBoard plugin writes event files to
    ``out_dir/tensorboard`` (scalars every step, images at evaluations; needs
    ``pip install "atoken[tensorboard]"``, docs/plugin_hooks.md).
    """

    tensorboard: bool = attrs.field(default=False, validator=_bool)


@attrs.frozen(kw_only=True)
class DistributedConfig:
    """``[distributed]``: how a run on several processes (``torchrun``, ``atoken train --nproc``)
    shares the work; ignored on one process.

    ``strategy``: ``"ddp"`` (every rank holds the whole model, gradients averaged) or
    ``"fsdp"`` (FSDP2: parameters, gradients and optimizer state sharded, ``fully_shard`` per
    transformer block then the root). ``backend``: ``"auto"`` is nccl on CUDA, gloo on the CPU.
    ``timeout``: seconds a collective may wait for the other ranks before the run fails with a
    message naming the stalled step (a hung rank). ``param_dtype``: FSDP2's compute dtype
    (``"auto"``: bf16 where bf16 is fast, else fp32); gradients are reduced in fp32.
    ``activation_checkpointing``: recompute each transformer block in the backward pass.
    """

    strategy: str = attrs.field(default="ddp", validator=_one_of("ddp", "fsdp"))
    backend: str = attrs.field(default="auto", validator=_one_of("auto", "gloo", "nccl"))
    timeout: float = attrs.field(default=600.0, validator=_positive)
    param_dtype: str = attrs.field(default="auto", validator=_one_of("auto", "bf16", "fp32"))
    activation_checkpointing: bool = attrs.field(default=False, validator=_bool)
    reshard_after_forward: bool = attrs.field(default=True, validator=_bool)


@attrs.frozen(kw_only=True)
class LossTerm:
    """One entry of a task's ``losses``: a registered loss, its weight and parameters."""

    name: str = attrs.field(validator=_str)
    weight: float = attrs.field(default=1.0, validator=_non_negative)
    params: Mapping[str, Any] = attrs.field(factory=dict)


def _optional_tuple(value: Any) -> tuple | None:
    return None if value is None else tuple(value)


def _weight(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{attribute.name} must be a number > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class TaskSpec:
    """One ``[[tasks]]`` table: the keys every task has; ``params`` holds the others (the
    task's own parameters, validated by the task's ``Params`` class).

    ``label`` names the task in logs, metrics and output folders (default: ``name``; two tasks
    of one name need labels); it, or the name standing in for it, is the folder of the task's
    pictures, so it follows :data:`~atoken.core.validators.PATH_NAME_RULE`. ``data`` is the
    data-source table (``source`` plus its parameters; empty: the task's default source).
    ``losses``/``metrics`` left out take the task's defaults; ``modality`` left empty is the
    task's or the data source's.
    """

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    label: str = ""
    weight: float = attrs.field(default=1.0, validator=_weight)
    modality: str = ""
    data: Mapping[str, Any] = attrs.field(factory=dict)
    losses: tuple[LossTerm, ...] | None = attrs.field(default=None, converter=_optional_tuple)
    metrics: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_tuple)
    params: Mapping[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.label:
            check_path_name(self.label, "label")
        elif self.name:  # the name is the label: it names the task's output folder
            try:
                check_path_name(self.name, "name")
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc} (a task without a label is filed under its name)"
                ) from None

    @property
    def key(self) -> str:
        """The label, else the name."""
        return self.label or self.name


def distinct_labels(tasks: tuple[TaskSpec, ...], where: str) -> None:
    keys = [t.key for t in tasks]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"{where} {twice} appear more than once: give each a distinct label")


@attrs.frozen(kw_only=True)
class TransformSpec:
    """One entry of a stage's ``transforms``: a registered stage transform and its parameters
    (``{ name = "expand_latent", latent_dim = 48 }``)."""

    name: str = attrs.field(validator=_str)
    params: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class StageSpec:
    """One ``[[stages]]`` table: what a stage of the curriculum trains, for how long and with
    which optimizer, and the transforms applied to the tokenizer when it starts.

    ``tasks`` are resolved: a label in the run file's ``tasks = ["image", ...]`` is the
    ``[[tasks]]`` table of that label, a table is a task of this stage only. ``optim`` holds the
    ``[optim]`` keys this stage overrides; ``mixture`` empty is ``[train] mixture``.
    """

    name: str = attrs.field(validator=path_name)  # out_dir/stages/<name>/
    steps: int = attrs.field(validator=_positive)
    tasks: tuple[TaskSpec, ...] = attrs.field(converter=_tuple)
    mixture: str = attrs.field(default="", validator=_one_of("", "round_robin", "weighted"))
    optim: Mapping[str, Any] = attrs.field(factory=dict)
    transforms: tuple[TransformSpec, ...] = attrs.field(default=(), converter=_tuple)

    def __attrs_post_init__(self) -> None:
        distinct_labels(self.tasks, "tasks")
