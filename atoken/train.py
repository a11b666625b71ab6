"""Training from a run file: the components it names resolved and handed to the engine.

The engine (:class:`atoken.core.trainer.Trainer`) knows no modality or loss. This module
picks the recipe and starts it: image reconstruction (:mod:`atoken.image_training`, optionally
starting as the PCA tokenizer), images + video (:mod:`atoken.train_video`) or captioned
semantic runs (:mod:`atoken.semantic_train`). Those modules build on
:mod:`atoken.image_training` and never import this one, so there is no import cycle.
"""

from __future__ import annotations

import torch

from atoken.baselines import PCATokenizer
from atoken.core.errors import ConfigError
from atoken.core.runconfig import RunConfig
from atoken.core.trainer import Trainer
from atoken.image_training import (
    PCA_CROP_BATCHES,
    ImageReconstructionTask,
    build_tokenizer,
    evaluate_images,
    tiles,
)
from atoken.pca_init import PCA_MAPS, init_from_pca
from atoken.plugins.manager import get_plugin_manager

__all__ = [
    "ImageReconstructionTask",
    "build_tokenizer",
    "evaluate_images",
    "fit_pca",
    "run_training",
    "tiles",
]


def fit_pca(task: ImageReconstructionTask, *, batches: int = PCA_CROP_BATCHES) -> PCATokenizer:
    """The best linear tokenizer with the run's latent size, fitted on the patches of the first
    ``batches`` training batches (the crops the tokenizer trains on; held-out photos excluded)."""
    crops = [x for step in range(batches) for x in task.sampler.batch(step)]
    return PCATokenizer(latent_dim=task.cfg.model.latent_dim, patch_size=16).fit(crops)


def run_training(cfg: RunConfig, *, resume: bool = False) -> tuple[Trainer, dict[str, float]]:
    """Build everything a run file names and train; returns the trainer and final metrics.

    With ``[model] pca_init = true`` the tokenizer starts as the PCA tokenizer of the training
    crops (:func:`atoken.pca_init.init_from_pca`); that PCA is kept as ``trainer.task.pca``.
    """
    torch.manual_seed(cfg.run.seed)
    if cfg.model.pca_init and (cfg.video.enabled or cfg.loss.semantic):
        raise ConfigError(
            "[model] pca_init starts an image reconstruction run (stage 1); stage 2 ([video] "
            "enabled) and semantic runs ([[loss.semantic]]) start from a preset or an image "
            "checkpoint ([model] init_from)"
        )
    if cfg.video.enabled:  # stage 2: images + video (atoken.train_video)
        from atoken.train_video import run_image_video_training

        return run_image_video_training(cfg, resume=resume)
    tokenizer = build_tokenizer(cfg)
    if cfg.loss.semantic:  # captioned data, reconstruction and alignment
        from atoken.semantic_train import SemanticTask

        task = SemanticTask(cfg, tokenizer)
    else:
        task = ImageReconstructionTask(cfg, tokenizer)
    if cfg.model.init_from:
        task.pretrained_prefixes = ("encoder.",)
    if cfg.model.pca_init:
        task.pca = fit_pca(task)
        init_from_pca(tokenizer, task.pca)
        # the PCA maps learn at encoder_lr_mult x lr, the (zero) residual branches at lr
        task.pretrained_prefixes = PCA_MAPS
    trainer = Trainer(cfg, task, hooks=get_plugin_manager().hook, device=cfg.train.device)
    metrics = trainer.fit(resume=resume)
    tokenizer.load_state_dict(trainer.eval_model.state_dict())
    tokenizer.save_pretrained(cfg.run.output / "tokenizer")
    return trainer, metrics
