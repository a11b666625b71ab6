"""Training from a run file: the tokenizer, the ``[[tasks]]`` and the engine, composed.

    tokenizer = build_tokenizer(cfg)                 [model]: a preset or init_from, its keys
                                                     verbatim, the tasks' modalities
    for each stage of cfg.plan() (one when the file has no [[stages]]), when it starts:
        tasks = [build_task(spec) ...]               the stage's tasks, from the task registry
        transform(tokenizer, StageContext(...))      its transforms, in place
                                                     (atoken.engine.transforms)
        mixture = TaskMixture(tasks)                 what the trainer trains in the stage
    trainer = Trainer(cfg, mixture, enter_stage=...) the one generic loop
    trainer.fit()                                    trains; at the end the checkpoint and
                                                     out/tokenizer, then the evaluation

The engine (:class:`atoken.engine.trainer.Trainer`) knows no modality, task or loss; a plugin's
task trains through this path with no entry point of its own.
"""

from __future__ import annotations

from typing import Any

import torch

from atoken.core.config import TokenizerConfig, load_preset
from atoken.core.errors import ConfigError
from atoken.data.sources import current_context
from atoken.engine.pca_init import PCA_CROP_BATCHES, fit_pca
from atoken.engine.runconfig import RunConfig
from atoken.engine.trainer import Trainer
from atoken.engine.transforms import StageContext, StageTransform
from atoken.plugins.manager import get_plugin_manager, get_registry
from atoken.pretrained import load_config
from atoken.tasks import TaskContext, TaskMixture, build_task, evaluate_samples, tiles
from atoken.tasks.base import named_in
from atoken.tokenizer import Tokenizer

__all__ = [
    "PCA_CROP_BATCHES",
    "build_run",
    "build_stage",
    "build_tokenizer",
    "build_transforms",
    "evaluate_samples",
    "fit_pca",
    "model_config",
    "model_overrides",
    "run_training",
    "task_modalities",
    "tiles",
]


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


def build_tokenizer(cfg: RunConfig) -> Tokenizer:
    """The tokenizer a run file's ``[model]`` section describes, in training mode: the preset
    (or ``init_from``'s weights) with :func:`model_overrides` over it."""
    m = cfg.model
    overrides = model_overrides(cfg)
    if m.init_from:
        tokenizer = Tokenizer.from_pretrained(m.init_from, **overrides)
    else:
        tokenizer = Tokenizer.from_preset(m.preset, **overrides)
    return tokenizer.train()


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


def build_stage(
    tokenizer: Tokenizer,
    cfg: RunConfig,
    index: int,
    *,
    transforms: list[StageTransform] | None = None,
    pretrained_prefixes: tuple[str, ...] = (),
) -> TaskMixture:
    """Start stage ``index`` of ``cfg.plan()``: build its tasks, apply its transforms to
    ``tokenizer`` (in place) and return its task mixture.

    ``pretrained_prefixes`` name the parameters ``[optim] encoder_lr_mult`` slows (a transform
    such as ``pca_init`` may change them on the mixture).
    """
    stage = cfg.plan()[index]
    if transforms is None:
        transforms = build_transforms(cfg)[index]
    sources = current_context(
        cfg.run.seed,
        micro_steps=cfg.stage_optim(stage).grad_accum,
        max_bad_samples=cfg.train.max_bad_samples,
    )
    context = TaskContext(model=tokenizer, sources=sources)
    tasks = [build_task(spec, context) for spec in stage.tasks]
    mixture = TaskMixture(
        tokenizer,
        tasks,
        schedule=stage.mixture or cfg.train.mixture,
        grad_accum=cfg.stage_optim(stage).grad_accum,
        seed=cfg.run.seed,
        pretrained_prefixes=pretrained_prefixes,
    )
    stage_context = StageContext(stage=stage, index=index, tasks=tasks, mixture=mixture)
    for transform in transforms:
        transform(tokenizer, stage_context)
    return mixture


def build_run(
    cfg: RunConfig, transforms: list[list[StageTransform]] | None = None
) -> tuple[Tokenizer, TaskMixture]:
    """The tokenizer and the task mixture of the run's first stage (nothing trained yet);
    ``transforms``: every stage's, from :func:`build_transforms` (built here when None).

    With ``[model] pca_init = true`` (or a first stage's ``pca_init`` transform) the tokenizer
    starts as the PCA tokenizer of the first task's training crops
    (:func:`atoken.engine.pca_init.init_from_pca`); that PCA is kept as ``mixture.pca``.
    """
    torch.manual_seed(cfg.run.seed)
    if cfg.model.pca_init and cfg.model.expand_latent:
        raise ConfigError("[model] pca_init and expand_latent exclude each other: pick one start")
    if transforms is None:
        transforms = build_transforms(cfg)
    tokenizer = build_tokenizer(cfg)
    prefixes = ("encoder.",) if cfg.model.init_from else ()
    mixture = build_stage(tokenizer, cfg, 0, transforms=transforms[0], pretrained_prefixes=prefixes)
    return tokenizer, mixture


def run_training(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    force: bool = False,
    run_file_text: str | None = None,
    resume_from: str | None = None,
    fallback: bool = False,
) -> tuple[Trainer, dict[str, float]]:
    """Build everything a run file names and train, stage by stage; returns the trainer and
    final metrics (prefixed by task label, e.g. ``image_reconstruction/psnr``; one that failed
    is a :class:`~atoken.plugins.metrics.base.MetricFailure` with its reason). The trained
    tokenizer (EMA weights when enabled) is saved to ``<out_dir>/tokenizer`` with the final
    checkpoint, before the final evaluation (which then cannot lose them); each stage's
    metrics and tokenizer to ``<out_dir>/stages/<name>/``.

    A fresh run into a folder that holds a run is a ``RunFolderError`` unless ``overwrite``;
    ``resume`` refuses a checkpoint of another configuration unless ``force``
    (:meth:`atoken.engine.trainer.Trainer.fit`) and lands in the checkpoint's stage. The run
    folder keeps the resolved configuration (``run.json``) and ``run_file_text``, the run
    file's text, as ``run.toml`` (``atoken report`` shows them). ``resume_from`` names the
    checkpoint to resume from (``step_N``); ``fallback`` resumes from the newest intact one
    when the newest is damaged. The run folder's lock is held from the first look at the
    folder to its last write: a second training into it is a ``RunFolderError``."""
    transforms = build_transforms(cfg)  # once: every stage's, checked before anything trains
    _, mixture = build_run(cfg, transforms)
    last = [mixture]

    def enter_stage(index: int, model: Tokenizer) -> TaskMixture:
        prefixes = last[0].pretrained_prefixes
        last[0] = build_stage(
            model, cfg, index, transforms=transforms[index], pretrained_prefixes=prefixes
        )
        return last[0]

    trainer = Trainer(
        cfg,
        mixture,
        hooks=get_plugin_manager().hook,
        device=cfg.train.device,
        enter_stage=enter_stage,
        run_file_text=run_file_text,
    )
    metrics = trainer.fit(  # it writes <out_dir>/tokenizer (rank 0) before the last evaluation
        resume=resume,
        overwrite=overwrite,
        force=force,
        resume_from=resume_from,
        fallback=fallback,
    )
    return trainer, metrics
