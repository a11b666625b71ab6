"""Joint training for reconstruction and text alignment on captioned images.

Shapes: a batch is images ``[B, 3, S, S]`` in [0, 1] and class labels ``[B]``; the batch's
distinct captions are embedded by the frozen text encoder to ``[T, D]`` (cached), and
``positives`` ``[B, T]`` marks each image's caption. One encoder pass serves both paths:

    features [N, C] -> bottleneck -> decoder -> reconstruction      (L_rec, L_KL)
    features [N, C] -> MAP head -> W_s -> image embedding [B, D]    (L_sem vs the captions)

    L = rec_weight * sum_i w_i L_i + sem_weight * sum_j v_j S_j + kl_weight * L_KL
      (paper: 0.2, 1.0 and 1e-8)

The semantic losses get the tokenizer's logit scale and bias (so they are trained and saved),
the positives, and the images (for a distillation teacher). Evaluation reports the image
metrics on held-out reconstructions and the semantic metrics (``zeroshot``, ``retrieval``) of
held-out embeddings against the class captions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.core.runconfig import RunConfig
from atoken.data.digits import CaptionedImages, DigitSampler, load_digit_captions
from atoken.image_training import evaluate_images
from atoken.plugins.manager import get_registry
from atoken.tokenizer import Tokenizer
from atoken.viz import save_side_by_side

__all__ = ["SemanticTask", "embed_in_chunks", "evaluate_semantic", "heldout_digits"]

CHUNK = 128


def embed_in_chunks(tokenizer: Tokenizer, images: torch.Tensor) -> torch.Tensor:
    """``tokenizer.embed`` of ``[B, 3, H, W]`` in chunks of 128: ``[B, D]``."""
    parts = [tokenizer.embed(images[i : i + CHUNK]) for i in range(0, images.shape[0], CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def evaluate_semantic(
    tokenizer: Tokenizer, data: CaptionedImages, metrics: dict[str, Any]
) -> dict[str, float]:
    """The embedding metrics of ``data``'s images against its class captions."""
    out: dict[str, float] = {}
    if not metrics:
        return out
    image = embed_in_chunks(tokenizer, data.images)  # [B, D]
    text = tokenizer.embed_text(list(data.captions))  # [K, D]
    for metric in metrics.values():
        metric.reset()
        metric.update(image, text, data.labels)
        out.update(metric.compute())
    return out


def heldout_digits(
    classes: str = "", *, size: int = 64, seed: int = 0, heldout_fraction: float = 0.2
) -> CaptionedImages:
    """The held-out captioned digits of a run with these data settings (its ``[data]
    digit_size``, ``heldout_fraction`` and ``[run] seed``); ``classes`` is a comma list of
    digits (empty: all ten)."""
    try:
        chosen = tuple(int(c) for c in classes.split(",") if c.strip())
    except ValueError as exc:
        raise ConfigError(f"digit classes must be a comma list of digits, got {classes!r}") from exc
    return load_digit_captions(
        size=size, classes=chosen, seed=seed, heldout_fraction=heldout_fraction
    )[1]


def split_metrics(names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(image metrics, embedding metrics) built by registry name."""
    registry = get_registry().metrics
    image, embedding = {}, {}
    for name in names:
        metric = registry.create(name)
        (embedding if getattr(metric, "inputs", "images") == "embeddings" else image)[name] = metric
    return image, embedding


class SemanticTask:
    """Train a tokenizer with a text encoder to reconstruct and to align with captions."""

    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer) -> None:
        if tokenizer.semantic is None:
            raise ConfigError(
                "semantic losses need a text encoder: set [model] text_encoder (e.g. 'minilm')"
            )
        if cfg.data.source != "digits":
            raise ConfigError(
                f"semantic training needs captioned data: [data] source = 'digits', got "
                f"{cfg.data.source!r}"
            )
        self.cfg, self.model = cfg, tokenizer
        self.train_set, self.heldout = load_digit_captions(
            size=cfg.data.digit_size,
            classes=cfg.data.digit_classes,
            heldout_fraction=cfg.data.heldout_fraction,
            seed=cfg.run.seed,
        )
        self.sampler = DigitSampler(
            self.train_set, batch_size=cfg.data.batch_size, seed=cfg.run.seed
        )
        registry = get_registry().losses
        self.losses = {
            t.name: (registry.create(t.name, **dict(t.params)), t.weight) for t in cfg.loss.terms
        }
        self.semantic = {
            t.name: (registry.create(t.name, **dict(t.params)), t.weight) for t in cfg.loss.semantic
        }
        self.kl_loss = registry.create("kl") if cfg.loss.kl_weight > 0 else None
        self.image_metrics, self.embedding_metrics = split_metrics(cfg.eval.metrics)
        self.pretrained_prefixes: tuple[str, ...] = ()

    def batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sampler.batch(step, micro)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple:
        images, labels = batch
        cfg = self.cfg.loss
        reconstruct = cfg.rec_weight > 0 or self.kl_loss is not None
        align = cfg.sem_weight > 0 and bool(self.semantic)
        step = model(model.prepare(images, "image"), decode=reconstruct, embed=align)
        logs: dict[str, float] = {}
        total = torch.zeros((), device=step.features.feats.device)
        if reconstruct:
            out, latent, recon = step.bottleneck, step.latent, step.samples
            context = {"latent": latent, **out.terms}
            rec = torch.zeros((), device=total.device)
            for name, (fn, weight) in self.losses.items():
                value = fn(recon, list(images.unbind(0)), context)
                logs[name] = float(value.detach())
                rec = rec + weight * value.float()
            total = total + cfg.rec_weight * rec
            if self.kl_loss is not None and "kl" in out.terms:
                kl = self.kl_loss(recon, images, context)
                logs["kl"] = float(kl.detach())
                total = total + cfg.kl_weight * kl.float()
        if align:
            total = total + cfg.sem_weight * self._semantic(
                model, step.embedding, images, labels, logs
            )
        return total, logs

    def _semantic(self, model, image, images, labels, logs) -> torch.Tensor:
        """The semantic terms of the image embeddings ``image [B, D]``."""
        present = torch.unique(labels)  # [T]: the batch's distinct captions
        text = model.embed_text([self.train_set.captions[int(i)] for i in present])  # [T, D]
        context = {
            "positives": labels[:, None] == present[None, :],  # [B, T]
            "logit_scale": model.semantic.logit_scale,
            "logit_bias": model.semantic.logit_bias,
            "images": images,
        }
        sem = torch.zeros((), device=image.device)
        for name, (fn, weight) in self.semantic.items():
            value = fn(image, text, context)
            logs[name] = float(value.detach())
            sem = sem + weight * value.float()
        logs["logit_scale"] = float(model.semantic.logit_scale.detach().exp())
        return sem

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        held = self.heldout
        metrics: dict[str, float] = {}
        if self.image_metrics:
            originals = list(held.images.unbind(0))
            recon = []
            for i in range(0, len(originals), CHUNK):
                recon += [
                    y.clamp(0, 1).float() for y in model.reconstruct(originals[i : i + CHUNK])
                ]
            metrics.update(evaluate_images(self.image_metrics, recon, originals))
            k = self.cfg.eval.grid_images
            save_side_by_side(
                originals[:k],
                recon[:k],
                out_dir / f"recon_step{step:06d}.png",
                labels=held.image_captions[:k],
            )
        metrics.update(evaluate_semantic(model, held, self.embedding_metrics))
        return metrics

    def is_pretrained(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.pretrained_prefixes)
