"""The image reconstruction task of a run: its tokenizer, data, losses, metrics and evaluation.

Shared by every training entry point (:mod:`atoken.train` dispatches; :mod:`atoken.train_video`
and :mod:`atoken.semantic_train` build on these pieces), so none of them imports another:

    L = rec_weight * sum_i w_i L_i(recon, target) + kl_weight * L_KL   (paper: 0.2 and 1e-8)

Evaluation reconstructs the held-out photos whole, computes the metrics (distributional ones,
such as Fréchet distances, on 128 px tiles so they see enough samples) and writes a
side-by-side PNG (original | reconstruction) per evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atoken.baselines import PCATokenizer
from atoken.core.errors import ConfigError
from atoken.core.runconfig import RunConfig
from atoken.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, CropSampler, ImageFolder, PhotoSet
from atoken.data.zarr_dataset import ZarrImages, is_store_url
from atoken.plugins.bottlenecks.fsq import codebook_usage
from atoken.plugins.manager import get_registry
from atoken.tokenizer import Tokenizer
from atoken.viz import save_side_by_side

__all__ = [
    "PCA_CROP_BATCHES",
    "ImageReconstructionTask",
    "build_tokenizer",
    "evaluate_images",
    "tiles",
]

TILE = 128
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


class _IndexView(Sequence):
    """The items of ``source`` at ``indices``, read on access."""

    def __init__(self, source: Any, indices: Sequence[int]) -> None:
        self.source, self.indices = source, list(indices)
        self.names = tuple(source.names[i] for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.source[self.indices[i]]


def _split(names: Sequence[str], heldout: Sequence[str], src: str) -> tuple[list, list]:
    """(train, held-out) indices: the samples named in ``heldout``, else the last one."""
    held = [i for i, n in enumerate(names) if n in heldout]
    missing = set(heldout) - {names[i] for i in held}
    if missing:
        raise ConfigError(f"[data] heldout names not in {src!r}: {sorted(missing)}")
    if len(names) < 2:
        raise ConfigError(f"[data] source {src!r} needs 2 samples or more, has {len(names)}")
    held = held or [len(names) - 1]
    return [i for i in range(len(names)) if i not in held], held


def _sources(cfg: RunConfig) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], tuple]:
    src = cfg.data.source
    heldout_names = cfg.data.heldout or (HELDOUT_PHOTOS if src == "photos" else ())
    if src == "photos":
        train = PhotoSet([n for n in TRAIN_PHOTOS if n not in heldout_names])
        heldout = PhotoSet(heldout_names)
        return train, heldout, heldout.names
    if is_store_url(src):  # a media store
        store = ZarrImages(src, cfg.data.storage_options)
        train_idx, held_idx = _split(store.names, heldout_names, src)
        opts = cfg.data.storage_options
        train = ZarrImages(src, opts, indices=train_idx)
        heldout = ZarrImages(src, opts, indices=held_idx)
        return train, heldout, heldout.names
    folder = ImageFolder(src)
    train_idx, held_idx = _split(folder.names, heldout_names, src)
    heldout = _IndexView(folder, held_idx)
    return _IndexView(folder, train_idx), heldout, heldout.names


def tiles(images: Sequence[torch.Tensor], size: int = TILE) -> list[torch.Tensor]:
    """Non-overlapping ``size`` x ``size`` tiles of each image (edges that do not fit dropped)."""
    out = []
    for x in images:
        _, H, W = x.shape
        for top in range(0, H - size + 1, size):
            for left in range(0, W - size + 1, size):
                out.append(x[:, top : top + size, left : left + size])
    return out


def evaluate_images(
    metrics: dict[str, Any],
    reconstructions: Sequence[torch.Tensor],
    originals: Sequence[torch.Tensor],
) -> dict[str, float]:
    """Run each metric (reset, update, compute); distributional metrics get 128 px tiles."""
    out: dict[str, float] = {}
    for metric in metrics.values():
        metric.reset()
        if getattr(metric, "distributional", False):
            metric.update(tiles(reconstructions), tiles(originals))
        else:
            metric.update(list(reconstructions), list(originals))
        out.update(metric.compute())
    return out


class ImageReconstructionTask:
    """Train a tokenizer to reconstruct random crops of real photos."""

    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer) -> None:
        self.cfg, self.model = cfg, tokenizer
        train, heldout, self.heldout_names = _sources(cfg)
        self.sampler = CropSampler(
            train,
            batch_size=cfg.data.batch_size,
            crop_min=cfg.data.crop_min,
            crop_max=cfg.data.crop_max,
            seed=cfg.run.seed,
        )
        self.heldout = [heldout[i].float() / 255 for i in range(len(heldout))]
        self.losses = {
            t.name: (get_registry().losses.create(t.name, **dict(t.params)), t.weight)
            for t in cfg.loss.terms
        }
        self.kl_loss = get_registry().losses.create("kl") if cfg.loss.kl_weight > 0 else None
        self.metrics = {name: get_registry().metrics.create(name) for name in cfg.eval.metrics}
        self.pretrained_prefixes: tuple[str, ...] = ()
        self.pca: PCATokenizer | None = None  # set by run_training with [model] pca_init

    def batch(self, step: int, micro: int) -> list[torch.Tensor]:
        return self.sampler.batch(step, micro)

    def loss(self, model: nn.Module, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        out = model(model.prepare(batch, "image"))  # the training step: ModelOutput
        recon, latent = out.samples, out.latent
        context = {"latent": latent, **out.bottleneck.terms}
        rec = torch.zeros((), device=latent.feats.device)
        logs: dict[str, float] = {}
        for name, (loss_fn, weight) in self.losses.items():
            value = loss_fn(recon, batch, context)
            logs[name] = float(value.detach())
            rec = rec + weight * value.float()
        total = self.cfg.loss.rec_weight * rec
        if self.kl_loss is not None and "kl" in out.bottleneck.terms:
            kl = self.kl_loss(recon, batch, context)
            logs["kl"] = float(kl.detach())
            total = total + self.cfg.loss.kl_weight * kl.float()
        return total, logs

    def reconstruct_heldout(self, model: nn.Module) -> list[torch.Tensor]:
        return [y.clamp(0, 1).float().cpu() for y in model.reconstruct(self.heldout, "image")]

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        recon = self.reconstruct_heldout(model)
        metrics = evaluate_images(self.metrics, recon, self.heldout)
        size = getattr(model.bottleneck, "codebook_size", None)
        if size is not None:  # a discrete latent: how much of the codebook the photos use
            _, ids = model.encode_with_ids(self.heldout, "image")
            metrics.update({f"codebook_{k}": v for k, v in codebook_usage(ids, size).items()})
        k = self.cfg.eval.grid_images
        save_side_by_side(
            self.heldout[:k],
            recon[:k],
            out_dir / f"recon_step{step:06d}.png",
            labels=self.heldout_names[:k],
        )
        return metrics

    def is_pretrained(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.pretrained_prefixes)
