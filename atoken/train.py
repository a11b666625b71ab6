"""Training from a run file: the tokenizer, the ``[[tasks]]`` and the engine, composed.

    tokenizer = build_tokenizer(cfg)                 [model]: a preset or init_from, + overrides
    tokenizer = expand_latent(tokenizer, n)          [model] expand_latent (stage 2)
    tasks = [build_task(spec) for spec in cfg.tasks] each resolved in the task registry
    trainer = Trainer(cfg, TaskMixture(tasks))       the one generic loop
    trainer.fit(); tokenizer.save_pretrained(out/tokenizer)

The engine (:class:`atoken.core.trainer.Trainer`) knows no modality, task or loss; a plugin's
task trains through this path with no entry point of its own.
"""

from __future__ import annotations

import torch

from atoken.baselines import PCATokenizer
from atoken.core.errors import ConfigError
from atoken.core.runconfig import RunConfig
from atoken.core.trainer import Trainer
from atoken.data.sources import current_context
from atoken.pca_init import PCA_MAPS, init_from_pca
from atoken.plugins.manager import get_plugin_manager
from atoken.tasks import TaskContext, TaskMixture, build_task, evaluate_samples, tiles
from atoken.tokenizer import Tokenizer
from atoken.transforms import expand_latent

__all__ = [
    "PCA_CROP_BATCHES",
    "build_run",
    "build_tokenizer",
    "evaluate_samples",
    "fit_pca",
    "run_training",
    "tiles",
]

PCA_CROP_BATCHES = 40


def build_tokenizer(cfg: RunConfig) -> Tokenizer:
    """The tokenizer a run file's ``[model]`` section describes."""
    m = cfg.model
    if m.init_from:
        tokenizer = Tokenizer.from_pretrained(m.init_from)
        if not m.modality_params:
            return tokenizer
        # [model] modality_params apply to the checkpoint too; a modality they name that the
        # checkpoint lacks is added with fresh parameters of its own.
        names = tuple(dict.fromkeys([*tokenizer.config.modalities, *m.modality_params]))
        params = {**tokenizer.config.modality_params, **dict(m.modality_params)}
        return Tokenizer.from_pretrained(m.init_from, modalities=names, modality_params=params)
    overrides = {
        "latent_dim": m.latent_dim,
        "bottleneck": m.bottleneck,
        "head": m.head,
        "bottleneck_params": dict(m.bottleneck_params),
        "modality_params": dict(m.modality_params),
        **dict(m.overrides),
    }
    if m.attention:
        overrides["attention"] = m.attention
    if m.text_encoder:
        overrides["text_encoder"] = m.text_encoder
        overrides["text_encoder_params"] = dict(m.text_encoder_params)
    return Tokenizer.from_preset(m.preset, **overrides)


def fit_pca(task, *, latent_dim: int, batches: int = PCA_CROP_BATCHES) -> PCATokenizer:
    """The best linear tokenizer with ``latent_dim`` channels per patch, fitted on the patches
    of the first ``batches`` training batches of ``task`` (held-out samples excluded).

    Raises:
        ConfigError: the task's samples are not ``[3, H, W]`` images.
    """
    crops = [x for step in range(batches) for x in task.batch(step, 0)]
    if not crops or any(x.ndim != 3 or x.shape[0] != 3 for x in crops):
        shape = tuple(crops[0].shape) if crops else ()
        raise ConfigError(
            f"[model] pca_init fits the PCA on the first task's [3, H, W] crops; task "
            f"{task.label!r} gives samples of shape {shape}"
        )
    return PCATokenizer(latent_dim=latent_dim, patch_size=16).fit(crops)


def build_run(cfg: RunConfig) -> tuple[Tokenizer, TaskMixture]:
    """The tokenizer and the task mixture a run file describes (nothing trained yet).

    With ``[model] pca_init = true`` the tokenizer starts as the PCA tokenizer of the first
    task's training crops (:func:`atoken.pca_init.init_from_pca`); that PCA is kept as
    ``mixture.pca``.
    """
    torch.manual_seed(cfg.run.seed)
    if cfg.model.pca_init and cfg.model.expand_latent:
        raise ConfigError("[model] pca_init and expand_latent exclude each other: pick one start")
    tokenizer = build_tokenizer(cfg)
    if cfg.model.expand_latent:
        tokenizer = expand_latent(tokenizer, cfg.model.expand_latent)
    context = TaskContext(model=tokenizer, sources=current_context(cfg.run.seed))
    tasks = [build_task(spec, context) for spec in cfg.tasks]
    mixture = TaskMixture(
        tokenizer,
        tasks,
        schedule=cfg.train.mixture,
        grad_accum=cfg.optim.grad_accum,
        seed=cfg.run.seed,
        pretrained_prefixes=("encoder.",) if cfg.model.init_from else (),
    )
    if cfg.model.pca_init:
        mixture.pca = fit_pca(tasks[0], latent_dim=tokenizer.config.latent_dim)
        init_from_pca(tokenizer, mixture.pca)
        # the PCA maps learn at encoder_lr_mult x lr, the (zero) residual branches at lr
        mixture.pretrained_prefixes = PCA_MAPS
    return tokenizer, mixture


def run_training(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, force: bool = False
) -> tuple[Trainer, dict[str, float]]:
    """Build everything a run file names and train; returns the trainer and final metrics
    (prefixed by task label, e.g. ``image_reconstruction/psnr``). The trained tokenizer (EMA
    weights when enabled) is saved to ``<out_dir>/tokenizer``.

    A fresh run into a folder that holds a run is a ``RunFolderError`` unless ``overwrite``;
    ``resume`` refuses a checkpoint of another configuration unless ``force``
    (:meth:`atoken.core.trainer.Trainer.fit`)."""
    tokenizer, mixture = build_run(cfg)
    trainer = Trainer(cfg, mixture, hooks=get_plugin_manager().hook, device=cfg.train.device)
    metrics = trainer.fit(resume=resume, overwrite=overwrite, force=force)
    tokenizer.load_state_dict(trainer.eval_model.state_dict())
    tokenizer.save_pretrained(cfg.run.output / "tokenizer")
    return trainer, metrics
