"""Run files: a TOML file structured into frozen attrs configs.

Every section is an attrs class; a key that no field has is an error naming the key, the
section and its close matches, and values are validated at this boundary (``ConfigError``
names the offending key). ``KEY=VALUE`` overrides (``optim.lr=1e-4``) are set into the parsed
file before it is structured (:mod:`atoken.engine.run_keys`).
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

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from atoken.core.errors import ConfigError
from atoken.engine.run_keys import apply_overrides, unknown_key
from atoken.engine.run_sections import (
    DistributedConfig,
    LogConfig,
    LossTerm,
    ModelConfig,
    OptimConfig,
    RunSection,
    StageSpec,
    TaskSpec,
    TrainConfig,
    TransformSpec,
    distinct_labels,
)
from atoken.engine.runconfig_legacy import LEGACY_SECTIONS, legacy_message

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DistributedConfig",
    "LogConfig",
    "LossTerm",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "StageSpec",
    "TaskSpec",
    "TrainConfig",
    "TransformSpec",
    "load_run_file",
    "structure",
]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class RunConfig:
    """A whole run file."""

    run: RunSection = attrs.field(factory=RunSection)
    model: ModelConfig = attrs.field(factory=ModelConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    train: TrainConfig = attrs.field(factory=TrainConfig)
    distributed: DistributedConfig = attrs.field(factory=DistributedConfig)
    log: LogConfig = attrs.field(factory=LogConfig)
    tasks: tuple[TaskSpec, ...] = attrs.field(default=(), converter=tuple)
    stages: tuple[StageSpec, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        distinct_labels(self.tasks, "[[tasks]]")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"[[stages]] names must be distinct, got {names}")
        if self.stages and (self.model.pca_init or self.model.expand_latent):
            raise ConfigError(
                "[model] pca_init / expand_latent do not combine with [[stages]]: list them "
                'as the first stage\'s transforms = [{ name = "pca_init" }]'
            )
        if self.stages and self.train.steps > sum(s.steps for s in self.stages):
            raise ConfigError(
                f"[train] steps = {self.train.steps} exceeds the stages' "
                f"{sum(s.steps for s in self.stages)} steps: with [[stages]] each stage has "
                "its steps ([train] steps, when given, stops the run earlier)"
            )

    def plan(self) -> tuple[StageSpec, ...]:
        """The stages the run trains: its ``[[stages]]``, or one stage ``"train"`` of
        ``[train] steps`` over the ``[[tasks]]`` with the ``[model]`` start transforms."""
        if self.stages:
            return self.stages
        transforms = []
        if self.model.pca_init:
            transforms.append(TransformSpec(name="pca_init"))
        if self.model.expand_latent:
            params = {"latent_dim": self.model.expand_latent}
            transforms.append(TransformSpec(name="expand_latent", params=params))
        return (
            StageSpec(
                name="train", steps=self.train.steps, tasks=self.tasks, transforms=transforms
            ),
        )

    def stage_optim(self, stage: StageSpec) -> OptimConfig:
        """``[optim]`` with the stage's overrides."""
        return structure(OptimConfig, {**attrs.asdict(self.optim), **stage.optim}, "optim")

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
            raise unknown_key(key, fields, f"section [{section}]")
        sub = fields[key].type
        if cls is RunConfig and key in ("tasks", "stages"):
            kwargs[key] = value  # structured below: stages refer to the tasks by label
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
            if _SECTIONS[sub] is ModelConfig:
                try:
                    value = ModelConfig.from_table(value)
                except ConfigError as exc:
                    raise ConfigError(f"[{key}] {exc}") from None
            else:
                value = structure(_SECTIONS[sub], value, key)
        kwargs[key] = value
    if cls is RunConfig:
        kwargs["tasks"] = _structure_tasks(kwargs.get("tasks", []), "tasks")
        if kwargs.get("stages"):
            kwargs["stages"] = _structure_stages(kwargs["stages"], kwargs["tasks"])
            steps = sum(s.steps for s in kwargs["stages"])
            kwargs["train"] = attrs.evolve(
                kwargs.get("train", TrainConfig()),
                steps=data.get("train", {}).get("steps", steps),
            )
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"[{section}] {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {exc}") from exc


def _structure_tasks(value: Any, where_all: str) -> list[TaskSpec]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"[[{where_all}]] must be an array of tables (see docs/training.md)")
    specs = []
    for i, table in enumerate(value):
        where = f"{where_all}[{i}]"
        if isinstance(table, TaskSpec):
            specs.append(table)
            continue
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


def _params_table(table: Any, where: str) -> dict[str, Any]:
    """``{name, params = {...}, other keys}`` -> ``{name, params}`` (other keys are params)."""
    if not isinstance(table, Mapping) or "name" not in table:
        raise ConfigError(f"{where} must be a table with a name, got {table!r}")
    own = table.get("params", {})
    if not isinstance(own, Mapping):
        raise ConfigError(f"{where} params must be a table, got {own!r}")
    rest = {k: v for k, v in table.items() if k not in ("name", "params")}
    return {"name": table["name"], "params": {**own, **rest}}


def _structure_stages(value: Any, tasks: list[TaskSpec]) -> list[StageSpec]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError("[[stages]] must be an array of tables (docs/training.md)")
    by_label = {t.key: t for t in tasks}
    stages = []
    for i, table in enumerate(value):
        if isinstance(table, StageSpec):
            stages.append(table)
            continue
        where = f"stages[{i}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table, got {type(table).__name__}")
        where = f"{where} ({table.get('name', '?')})"
        table = dict(table)
        items = table.get("tasks", [])
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where} tasks must be an array of [[tasks]] labels or tables")
        unknown = [t for t in items if isinstance(t, str) and t not in by_label]
        if unknown:
            raise ConfigError(
                f"{where} tasks {unknown} name no [[tasks]] label; the run file has "
                f"{sorted(by_label) or 'none'}"
            )
        if not items:
            raise ConfigError(f"{where} tasks is empty: list [[tasks]] labels or tables")
        resolved = [by_label[t] if isinstance(t, str) else t for t in items]
        table["tasks"] = _structure_tasks(resolved, f"{where}.tasks")
        optim = table.get("optim", {})
        if not isinstance(optim, Mapping):
            raise ConfigError(f"{where} optim must be a table of [optim] keys, got {optim!r}")
        structure(OptimConfig, optim, f"{where}.optim")  # names a bad key or value now
        transforms = table.get("transforms", [])
        if not isinstance(transforms, (list, tuple)):
            raise ConfigError(f"{where} transforms must be an array of tables")
        table["transforms"] = [
            structure(TransformSpec, _params_table(t, f"{where}.transforms[{j}]"), where)
            for j, t in enumerate(transforms)
        ]
        stages.append(structure(StageSpec, table, where))
    return stages


_SECTIONS: dict[str, type] = {
    "RunSection": RunSection,
    "ModelConfig": ModelConfig,
    "OptimConfig": OptimConfig,
    "TrainConfig": TrainConfig,
    "DistributedConfig": DistributedConfig,
    "LogConfig": LogConfig,
}


def load_run_file(
    path: str | Path, *, dotted: Sequence[str] = (), **section_overrides: Mapping[str, Any]
) -> RunConfig:
    """Parse a TOML run file into a :class:`RunConfig`.

    ``section_overrides`` (e.g. ``train={"steps": 10}``) are merged over the file's sections;
    ``tasks=[{"data": {"batch_size": 2}}]`` patches the first ``[[tasks]]`` table. Then
    ``dotted`` overrides, ``KEY=VALUE`` as on the command line (``"optim.lr=1e-4"``,
    ``"tasks.0.data.batch_size=4"``: :mod:`atoken.engine.run_keys`), are set in order.

    Raises:
        ConfigError: for unreadable TOML, an unknown section or key (with close matches), an
            invalid value, or an override that is not KEY=VALUE or names no key.
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
        if section in ("tasks", "stages"):
            data[section] = _patch_tasks(data.get(section, []), values, section)
        else:
            data[section] = {**data.get(section, {}), **values}
    cfg = structure(RunConfig, apply_overrides(data, dotted), "top level")
    if not cfg.tasks and not cfg.stages:
        raise ConfigError(
            f"run file {str(path)!r} names no [[tasks]]: add at least one, e.g.\n"
            '[[tasks]]\nname = "image_reconstruction"\ndata = { source = "photos" }'
        )
    return cfg


def _patch_tasks(tasks: list, patches: Any, section: str = "tasks") -> list:
    """``tasks=[{...}, ...]`` (or ``stages=``) overrides: patch i is merged into table i (a
    table value such as ``data`` one level deep)."""
    if not isinstance(patches, (list, tuple)) or len(patches) > len(tasks):
        raise ConfigError(f"{section} overrides must be a list of at most {len(tasks)} tables")
    out = [dict(t) for t in tasks]
    for task, patch in zip(out, patches, strict=False):
        for key, value in patch.items():
            old = task.get(key)
            both = isinstance(old, Mapping) and isinstance(value, Mapping)
            task[key] = {**old, **value} if both else value
    return out
