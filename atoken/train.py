"""Training from a run file: the tokenizer, the ``[[tasks]]`` and the engine, composed.

    transforms = build_transforms(cfg)               every stage's, built (atoken.run_model)
    tasks = dry_run(cfg, transforms)                 every stage's tasks, built before step 0
                                                     against a shape-only model of the stage
                                                     (atoken.dry_run: every mistake shows now)
    tokenizer = build_tokenizer(cfg)                 [model]: a preset or init_from, its keys
                                                     verbatim, the tasks' modalities
    for each stage of cfg.plan() (one when the file has no [[stages]]), when it starts:
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

import torch

from atoken.core.errors import ConfigError
from atoken.dry_run import dry_run, stage_tasks
from atoken.engine.pca_init import PCA_CROP_BATCHES, fit_pca
from atoken.engine.runconfig import RunConfig
from atoken.engine.trainer import Trainer
from atoken.engine.transforms import StageContext, StageTransform
from atoken.plugins.manager import get_plugin_manager
from atoken.run_model import build_transforms, model_config, model_overrides, task_modalities
from atoken.tasks import Task, TaskMixture, evaluate_samples, tiles
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


def build_stage(
    tokenizer: Tokenizer,
    cfg: RunConfig,
    index: int,
    *,
    transforms: list[StageTransform] | None = None,
    pretrained_prefixes: tuple[str, ...] = (),
    tasks: list[Task] | None = None,
) -> TaskMixture:
    """Start stage ``index`` of ``cfg.plan()``: build its tasks (unless ``tasks``, built by
    :func:`atoken.dry_run.dry_run`, are given), apply its transforms to ``tokenizer`` (in
    place) and return its task mixture.

    ``pretrained_prefixes`` name the parameters ``[optim] encoder_lr_mult`` slows (a transform
    such as ``pca_init`` may change them on the mixture).
    """
    stage = cfg.plan()[index]
    if transforms is None:
        transforms = build_transforms(cfg)[index]
    if tasks is None:
        tasks = stage_tasks(cfg, index, tokenizer)
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
    cfg: RunConfig,
    transforms: list[list[StageTransform]] | None = None,
    tasks: list[list[Task]] | None = None,
) -> tuple[Tokenizer, TaskMixture]:
    """The tokenizer and the task mixture of the run's first stage (nothing trained yet);
    ``transforms``: every stage's, from :func:`build_transforms` (built here when None);
    ``tasks``: every stage's, from :func:`atoken.dry_run.dry_run` (the first stage's are
    built here when None).

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
    first = None if tasks is None else tasks[0]
    mixture = build_stage(
        tokenizer, cfg, 0, transforms=transforms[0], pretrained_prefixes=prefixes, tasks=first
    )
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
    """Build everything a run file names, check every stage's tasks before step 0 (the dry
    run, :func:`atoken.dry_run.dry_run`) and train, stage by stage; returns the trainer and
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
    tasks = dry_run(cfg, transforms)  # every stage's tasks, on the model each stage will have
    _, mixture = build_run(cfg, transforms, tasks)
    last = [mixture]

    def enter_stage(index: int, model: Tokenizer) -> TaskMixture:
        prefixes = last[0].pretrained_prefixes
        last[0] = build_stage(
            model,
            cfg,
            index,
            transforms=transforms[index],
            pretrained_prefixes=prefixes,
            tasks=tasks[index],
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
