"""What a run file builds before anything trains: its model's configuration and its stage
transforms (nothing is trained, allocated or read but a checkpoint's ``config.json``).

    model_config(cfg)          the TokenizerConfig of the run's first tokenizer: [model]'s
                               preset or init_from with model_overrides(cfg) over it
    model_overrides(cfg)       the [model] keys verbatim, and the modalities the tasks train
    task_modalities(cfg)       those modalities, as far as the run file tells
    build_transforms(cfg)      every stage's transforms, built (a bad name or parameter fails
                               now, not at its stage)

:mod:`atoken.train` composes the run from them; :mod:`atoken.engine.plan` (``--plan``) and
:mod:`atoken.dry_run` build the run's shape-only model from them.
"""

from __future__ import annotations

from typing import Any

from atoken.core.config import TokenizerConfig, load_preset
from atoken.core.errors import ConfigError
from atoken.engine.runconfig import RunConfig
from atoken.engine.transforms import StageTransform
from atoken.plugins.manager import get_registry
from atoken.pretrained import load_config
from atoken.tasks.base import named_in

__all__ = ["build_transforms", "model_config", "model_overrides", "task_modalities"]


def task_modalities(cfg: RunConfig) -> tuple[str, ...]:
    """The modalities the run's tasks train, in order, as far as the run file tells without
    building anything: a task's ``modality``, else its task's ``default_modality``, else its
    data table's ``modality``, else its data source's class ``modality``."""
    registry = get_registry()
    names: list[str] = []
    for stage in cfg.plan():
        for spec in stage.tasks:
            name = spec.modality
            if not name and spec.name in registry.tasks:
                name = getattr(registry.tasks.get(spec.name), "default_modality", "")
            if not name:
                name = spec.data.get("modality", "")
                source = spec.data.get("source")
                if not name and isinstance(source, str) and source in registry.data_sources:
                    name = getattr(registry.data_sources.get(source), "modality", "")
            if isinstance(name, str) and name:
                names.append(name)
    return tuple(dict.fromkeys(names))


def model_overrides(cfg: RunConfig) -> dict[str, Any]:
    """The tokenizer config keys a run sets over its start (``[model]``'s preset or
    ``init_from``): the section's keys verbatim, and ``modalities``: the start's (or the
    section's) plus those ``modality_params`` names and those the ``[[tasks]]`` train
    (:func:`task_modalities`). A checkpoint's ``modality_params`` are kept under the
    section's."""
    m = cfg.model
    overrides = m.tokenizer_overrides()
    start = load_config(m.init_from) if m.init_from else load_preset(m.preset)
    if m.init_from and "modality_params" in overrides:  # over the checkpoint's, not instead
        overrides["modality_params"] = {**start.modality_params, **overrides["modality_params"]}
    base = overrides.get("modalities", start.modalities or ())
    named = overrides.get("modality_params", {})  # a modality given parameters is built
    overrides["modalities"] = tuple(dict.fromkeys([*base, *named, *task_modalities(cfg)]))
    return overrides


def model_config(cfg: RunConfig) -> TokenizerConfig:
    """The :class:`TokenizerConfig` of the run's first tokenizer (nothing built or read but
    a checkpoint's ``config.json``)."""
    m = cfg.model
    start = load_config(m.init_from) if m.init_from else load_preset(m.preset)
    return start.with_overrides(**model_overrides(cfg))


def build_transforms(cfg: RunConfig) -> list[list[StageTransform]]:
    """The stage transforms of every stage of ``cfg.plan()``, built before anything trains
    (an unknown name or a bad parameter fails now, not hours later at its stage).

    Raises:
        UnknownComponentError: a transform name no plugin registered.
        ConfigError: a transform's parameters are wrong (the stage and transform are named).
    """
    registry = get_registry().stage_transforms
    built = []
    for stage in cfg.plan():
        transforms = []
        for spec in stage.transforms:
            where = f"[[stages]] {stage.name}"
            factory = named_in(where, "transform", registry, spec.name, build=False)
            try:
                transforms.append(factory(**spec.params))
            except (TypeError, ConfigError) as exc:
                raise ConfigError(
                    f"[[stages]] {stage.name!r}: transform {spec.name!r}: {exc}"
                ) from exc
        built.append(transforms)
    return built
