"""Run files: a TOML file structured into frozen attrs configs.

Every section is an attrs class; a key that no field has is an error naming the key and the
section, and values are validated at this boundary (``ConfigError`` names the offending key).
Components are named by registry name (``bottleneck = "kl"``, ``[[tasks]] name =
"image_reconstruction"``, ``losses = [{ name = "l1" }]``); the names are resolved later, by
whoever builds the run, so a typo surfaces as an ``UnknownComponentError`` listing close
matches. Each ``[[tasks]]`` table keeps the keys every task has (:class:`TaskSpec`); its other
keys are the task's own parameters, validated by the task.

A minimal run file::

    [run]
    name = "demo"

    [model]
    preset = "tiny"

    [[tasks]]
    name = "image_reconstruction"
    data = { source = "photos", crop_max = 128 }
    losses = [{ name = "l1", weight = 0.2 }, { name = "kl", weight = 1e-8 }]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from atoken.core.errors import ConfigError
from atoken.core.runconfig_legacy import LEGACY_SECTIONS, legacy_message

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "LossTerm",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TaskSpec",
    "TrainConfig",
    "load_run_file",
    "structure",
]

T = TypeVar("T")


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
    """``[run]``: name, output folder and seed."""

    name: str = attrs.field(default="run", validator=_str)
    out_dir: str = attrs.field(default="", validator=_str)  # default: runs/<name>
    seed: int = attrs.field(default=0, validator=_integer)

    @property
    def output(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """``[model]``: a preset plus overrides, and component names."""

    preset: str = "tiny"
    bottleneck: str = "kl"
    latent_dim: int = attrs.field(default=32, validator=_positive)
    head: str = "pixels"
    attention: str = ""  # empty: the default backend for the device
    overrides: Mapping[str, Any] = attrs.field(factory=dict)
    bottleneck_params: Mapping[str, Any] = attrs.field(factory=dict)
    init_from: str = ""  # a checkpoint folder (save_pretrained) to start from
    text_encoder: str = ""  # a registered text encoder to align to (empty: none)
    text_encoder_params: Mapping[str, Any] = attrs.field(factory=dict)  # trainable = true: train it
    # per modality, the parameters of its factory (TokenizerConfig.modality_params), e.g.
    # modality_params = { depth = { depth_mean = 2.5 } }
    modality_params: Mapping[str, Any] = attrs.field(factory=dict)
    # start as the PCA tokenizer of the training crops (atoken.pca_init); needs the overrides
    # final_norm = false, decoder_final_norm = false, decoder_bias = true
    pca_init: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    # widen the kl latent to this many channels before training (stage 2: 32 -> 48; the
    # decoder's output is unchanged at the start, atoken.transforms.expand_latent); 0: keep
    expand_latent: int = attrs.field(default=0, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.pca_init and self.init_from:
            raise ConfigError("[model] pca_init and init_from exclude each other: pick one start")


@attrs.frozen(kw_only=True)
class OptimConfig:
    """``[optim]``: AdamW, warmup then cosine, clipping and accumulation."""

    lr: float = attrs.field(default=3e-4, validator=_positive)
    min_lr: float = attrs.field(default=3e-5, validator=_non_negative)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.95), converter=_tuple)
    weight_decay: float = attrs.field(default=0.1, validator=_non_negative)
    warmup_steps: int = attrs.field(default=100, validator=_non_negative)
    encoder_lr_mult: float = attrs.field(default=0.1, validator=_positive)
    grad_clip: float = attrs.field(default=1.0, validator=_non_negative)  # 0: off
    grad_accum: int = attrs.field(default=1, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}")


@attrs.frozen(kw_only=True)
class TrainConfig:
    """``[train]``: length, precision, EMA, evaluation, checkpoints and guards."""

    steps: int = attrs.field(default=1000, validator=_positive)
    max_minutes: float = attrs.field(default=0.0, validator=_non_negative)  # 0: no limit
    precision: str = attrs.field(default="auto", validator=_one_of("auto", "bf16", "fp32"))
    ema_decay: float = attrs.field(default=0.999, validator=_decay)  # 0: off
    eval_every: int = attrs.field(default=0, validator=_non_negative)  # 0: only at the end
    checkpoint_every: int = attrs.field(default=0, validator=_non_negative)
    keep_checkpoints: int = attrs.field(default=2, validator=_positive)
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
    of one name need labels). ``data`` is the data-source table (``source`` plus its
    parameters; empty: the task's default source). ``losses``/``metrics`` left out take the
    task's defaults; ``modality`` left empty is the task's or the data source's.
    """

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    label: str = ""
    weight: float = attrs.field(default=1.0, validator=_weight)
    modality: str = ""
    data: Mapping[str, Any] = attrs.field(factory=dict)
    losses: tuple[LossTerm, ...] | None = attrs.field(default=None, converter=_optional_tuple)
    metrics: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_tuple)
    params: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def key(self) -> str:
        """The label, else the name."""
        return self.label or self.name


@attrs.frozen(kw_only=True)
class RunConfig:
    """A whole run file."""

    run: RunSection = attrs.field(factory=RunSection)
    model: ModelConfig = attrs.field(factory=ModelConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    tasks: tuple[TaskSpec, ...] = attrs.field(default=(), converter=_tuple)

    def __attrs_post_init__(self) -> None:
        keys = [t.key for t in self.tasks]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ConfigError(
                f"[[tasks]] {twice} appear more than once: give each a distinct label = ..."
            )

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


_NESTED: dict[tuple[type, str], type] = {
    (TaskSpec, "losses"): LossTerm,
}
_TASK_KEYS = tuple(f.name for f in attrs.fields(TaskSpec) if f.name != "params")


def structure(cls: type[T], data: Mapping[str, Any], section: str) -> T:
    """Build attrs class ``cls`` from a mapping; unknown keys raise ``ConfigError``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"section [{section}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r} in section [{section}]; known keys: {', '.join(fields)}"
            )
        sub = fields[key].type
        if cls is RunConfig and key == "tasks":
            value = _structure_tasks(value)
            kwargs[key] = value
            continue
        nested = _NESTED.get((cls, key))
        if nested is not None:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"[{section}] {key} must be an array of tables")
            value = [structure(nested, item, f"{section}.{key}") for item in value]
        elif isinstance(sub, str) and sub in _SECTIONS:
            if not isinstance(value, Mapping):
                got = (
                    "an array of tables ([[" + key + "]])"
                    if isinstance(value, list)
                    else repr(value)
                )
                raise ConfigError(f"section [{key}] must be a table, got {got}: write [{key}]")
            value = structure(_SECTIONS[sub], value, key)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"[{section}] {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {exc}") from exc


def _structure_tasks(value: Any) -> list[TaskSpec]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError("[[tasks]] must be an array of tables (see docs/training.md)")
    specs = []
    for i, table in enumerate(value):
        where = f"tasks[{i}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table, got {type(table).__name__}")
        if "name" not in table:
            raise ConfigError(f"{where} has no name: name = a registered task")
        common = {k: v for k, v in table.items() if k in _TASK_KEYS}
        if "data" in common and not isinstance(common["data"], Mapping):
            raise ConfigError(f"{where} data must be a table: data = {{ source = ... }}")
        own = table.get("params", {})  # as RunConfig.to_dict writes them
        if not isinstance(own, Mapping):
            raise ConfigError(f"{where} params must be a table, got {own!r}")
        rest = {k: v for k, v in table.items() if k not in (*_TASK_KEYS, "params")}
        common["params"] = {**own, **rest}
        specs.append(structure(TaskSpec, common, f"{where} ({table['name']})"))
    return specs


_SECTIONS: dict[str, type] = {
    "RunSection": RunSection,
    "ModelConfig": ModelConfig,
    "OptimConfig": OptimConfig,
    "TrainConfig": TrainConfig,
}


def load_run_file(path: str | Path, **section_overrides: Mapping[str, Any]) -> RunConfig:
    """Parse a TOML run file into a :class:`RunConfig`.

    ``section_overrides`` (e.g. ``train={"steps": 10}``) are merged over the file's sections;
    ``tasks=[{"data": {"batch_size": 2}}]`` patches the first ``[[tasks]]`` table.

    Raises:
        ConfigError: for unreadable TOML, an unknown section or key, or an invalid value.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"run file {str(path)!r} is a folder, not a TOML file")
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"run file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"run file {str(path)!r} is not text (TOML is UTF-8): {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"run file {str(path)!r} is not valid TOML: {exc}") from exc
    legacy = sorted(set(data) & set(LEGACY_SECTIONS))
    if legacy:
        raise ConfigError(legacy_message(data, str(path)))
    for section, values in section_overrides.items():
        if section == "tasks":
            data["tasks"] = _patch_tasks(data.get("tasks", []), values)
        else:
            data[section] = {**data.get(section, {}), **values}
    cfg = structure(RunConfig, data, "top level")
    if not cfg.tasks:
        raise ConfigError(
            f"run file {str(path)!r} names no [[tasks]]: add at least one, e.g.\n"
            '[[tasks]]\nname = "image_reconstruction"\ndata = { source = "photos" }'
        )
    return cfg


def _patch_tasks(tasks: list, patches: Any) -> list:
    """``tasks=[{...}, ...]`` overrides: patch i is merged into task i (a table value such as
    ``data`` one level deep)."""
    if not isinstance(patches, (list, tuple)) or len(patches) > len(tasks):
        raise ConfigError(f"tasks overrides must be a list of at most {len(tasks)} tables")
    out = [dict(t) for t in tasks]
    for task, patch in zip(out, patches, strict=False):
        for key, value in patch.items():
            old = task.get(key)
            both = isinstance(old, Mapping) and isinstance(value, Mapping)
            task[key] = {**old, **value} if both else value
    return out
