"""Stage 2: images and video together, from an image checkpoint with the latent expanded.

The paper's curriculum adds video in stage 2 (latent 32 -> 48). A run file with
``[video] enabled = true`` runs this recipe through ``atoken train``:

1. the tokenizer is ``[model] init_from`` (an image checkpoint) or a fresh preset;
2. :func:`expand_latent` widens the ``kl`` latent to ``[video] latent_dim``: the new mean and
   log-variance rows of the bottleneck get a fresh initialisation and the decoder's input
   columns for the new channels are zero, so the decoder's output is unchanged at the start
   (the new channels then learn: their values are non-zero, so the zero columns get gradients);
3. micro-steps alternate image and video batches (round-robin over
   ``step * grad_accum + micro``; ``grad_accum = 2`` gives one of each per optimizer step);
4. image batches use the run's image losses; video batches **L1 only** (plus the KL term):
   ``L = rec_weight * L1 + kl_weight * KL``;
5. evaluation reports the image metrics and, on the held-out clips reconstructed in temporal
   tiles with the decoder KV cache, the video metrics; it writes side-by-side GIF and MP4
   files (original | reconstruction).

Training clips are one tile long (16 frames), so training never uses the cache (as in the
paper: cache 0, non-overlapping tiles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.core.runconfig import RunConfig
from atoken.core.trainer import Trainer
from atoken.data.videos import ClipSampler, VideoSet, ZarrVideos
from atoken.data.zarr_dataset import is_store_url
from atoken.image_training import ImageReconstructionTask, build_tokenizer
from atoken.plugins.manager import get_plugin_manager, get_registry
from atoken.tiling import reconstruct_tiled
from atoken.tokenizer import Tokenizer
from atoken.viz_video import save_clip_side_by_side

__all__ = [
    "ImageVideoTask",
    "expand_latent",
    "run_image_video_training",
]


@torch.no_grad()
def expand_latent(tokenizer: Tokenizer, latent_dim: int) -> Tokenizer:
    """A tokenizer with the ``kl`` latent widened to ``latent_dim`` channels, every other weight
    copied; the decoder's output is unchanged (new input columns are zero).

    Raises:
        ConfigError: a non-``kl`` bottleneck, no decoder, or a smaller ``latent_dim``.
    """
    cfg = tokenizer.config
    old = cfg.latent_dim
    if cfg.decoder is None or cfg.bottleneck != "kl":
        raise ConfigError(
            f"expand_latent needs a tokenizer with a decoder and the 'kl' bottleneck, got "
            f"bottleneck={cfg.bottleneck!r}"
        )
    if latent_dim < old:
        raise ConfigError(f"expand_latent: latent_dim {latent_dim} < the current {old}")
    if latent_dim == old:
        return tokenizer
    new = Tokenizer(cfg.with_overrides(latent_dim=latent_dim)).to(tokenizer._device())
    state = new.state_dict()
    for key, value in tokenizer.state_dict().items():
        if state[key].shape == value.shape:
            state[key] = value
    L = latent_dim
    for name in ("weight", "bias"):  # proj rows: [mean (L) ; logvar (L)]
        src = tokenizer.state_dict()[f"bottleneck.proj.{name}"]  # [2 * old, ...]
        dst = state[f"bottleneck.proj.{name}"].clone()  # [2 * L, ...], fresh init
        dst[:old] = src[:old]  # mean of the old channels
        dst[L : L + old] = src[old:]  # their log-variance
        state[f"bottleneck.proj.{name}"] = dst
    w = state["decoder.in_proj.weight"].clone()  # [C, L]
    w[:, :old] = tokenizer.state_dict()["decoder.in_proj.weight"]
    w[:, old:] = 0  # the new channels do not change the output at the start
    state["decoder.in_proj.weight"] = w
    new.load_state_dict(state)
    return new.train(tokenizer.training)


def _video_source(sources: tuple[str, ...], cfg: Any) -> Any:
    if len(sources) == 1 and is_store_url(sources[0]):
        return ZarrVideos(sources[0])
    return VideoSet(list(sources), max_frames=cfg.max_frames, max_side=cfg.max_side)


class ImageVideoTask:
    """Round-robin image and video reconstruction (the stage-2 recipe)."""

    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer) -> None:
        self.cfg, self.model = cfg, tokenizer
        self.image = ImageReconstructionTask(cfg, tokenizer)
        v = cfg.video
        self.sampler = ClipSampler(
            _video_source(v.sources, v),
            batch_size=v.batch_size,
            frames=v.frames,
            strides=v.strides,
            crop_min=v.crop_min,
            crop_max=v.crop_max,
            seed=cfg.run.seed,
        )
        held = VideoSet(list(v.heldout), max_frames=v.eval_frames, max_side=v.max_side)
        self.heldout_names = held.names
        self.heldout = [held[i].float() / 255 for i in range(len(held))]
        self.video_metrics = {name: get_registry().metrics.create(name) for name in v.metrics}

    @property
    def pretrained_prefixes(self) -> tuple[str, ...]:
        return self.image.pretrained_prefixes

    @pretrained_prefixes.setter
    def pretrained_prefixes(self, value: tuple[str, ...]) -> None:
        self.image.pretrained_prefixes = value

    def kind(self, step: int, micro: int) -> str:
        """``"image"`` or ``"video"``: round-robin over micro-steps."""
        return ("image", "video")[(step * self.cfg.optim.grad_accum + micro) % 2]

    def batch(self, step: int, micro: int) -> tuple[str, list[torch.Tensor]]:
        kind = self.kind(step, micro)
        if kind == "image":
            return kind, self.image.batch(step, micro)
        return kind, self.sampler.batch(step, micro)

    def loss(self, model: nn.Module, batch: tuple[str, list[torch.Tensor]]) -> tuple[Any, dict]:
        kind, samples = batch
        if kind == "image":
            return self.image.loss(model, samples)
        step = model(model.prepare(samples, "video"))  # the training step: ModelOutput
        recon, out = step.samples, step.bottleneck
        l1 = torch.stack(
            [(r.float() - x.to(r.device)).abs().mean() for r, x in zip(recon, samples, strict=True)]
        ).mean()
        total = self.cfg.loss.rec_weight * l1
        logs = {"video_l1": float(l1.detach())}
        if self.cfg.loss.kl_weight > 0 and "kl" in out.terms:
            kl = out.terms["kl"].float()
            logs["video_kl"] = float(kl.detach())
            total = total + self.cfg.loss.kl_weight * kl
        return total, logs

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        metrics = self.image.evaluate(model, step, out_dir)
        v = self.cfg.video
        recons = []
        for name, clip in zip(self.heldout_names, self.heldout, strict=True):
            recon = (
                reconstruct_tiled(
                    model, clip, tile_frames=v.tile_frames, kv_cache_steps=v.kv_cache_steps
                )
                .clamp(0, 1)
                .cpu()
            )
            recons.append(recon)
            save_clip_side_by_side(clip, recon, out_dir / f"video_step{step:06d}_{name}", fps=v.fps)
        for metric in self.video_metrics.values():
            metric.reset()
            metric.update(recons, self.heldout)
            metrics.update(metric.compute())
        return metrics

    def is_pretrained(self, name: str) -> bool:
        return self.image.is_pretrained(name)


def run_image_video_training(
    cfg: RunConfig, *, resume: bool = False
) -> tuple[Trainer, dict[str, float]]:
    """Stage 2 as the run file describes; returns the trainer and the final metrics."""
    if not cfg.video.enabled:
        raise ConfigError("[video] enabled = false: use atoken.train.run_training")
    torch.manual_seed(cfg.run.seed)
    tokenizer = expand_latent(build_tokenizer(cfg), cfg.video.latent_dim)
    task = ImageVideoTask(cfg, tokenizer)
    if cfg.model.init_from:
        task.pretrained_prefixes = ("encoder.",)
    trainer = Trainer(cfg, task, hooks=get_plugin_manager().hook, device=cfg.train.device)
    metrics = trainer.fit(resume=resume)
    tokenizer.load_state_dict(trainer.eval_model.state_dict())
    tokenizer.save_pretrained(cfg.run.output / "tokenizer")
    return trainer, metrics
