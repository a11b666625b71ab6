"""The ``text_alignment`` task: reconstruction and text alignment on captioned samples.

Shapes: a batch is samples (e.g. images ``[3, S, S]`` in [0, 1]) and class labels ``[B]``;
the batch's distinct captions are embedded by the tokenizer's text encoder to ``[T, D]``, and
``positives`` ``[B, T]`` marks each sample's caption. One encoder pass serves both paths:

    features [N, C] -> bottleneck -> decoder -> reconstruction      ("samples", "terms" losses)
    features [N, C] -> MAP head -> W_s -> embedding [B, D]          ("embeddings" losses)

    L = sum_i w_i L_i     (the paper: 0.2 per reconstruction term, 1.0 siglip, 1e-8 kl)

An ``"embeddings"`` loss is called as ``loss(embedding [B, D], text [T, D], context)`` with
``positives``, the tokenizer's ``logit_scale`` and ``logit_bias`` (so they are trained and
saved) and ``images`` (the batch's samples, for a distillation teacher). Any modality with an
embedding works; the data source must be captioned (:class:`atoken.data.CaptionedSource`):
class captions (``digits``), or a caption per sample (``webdataset``/``hf_datasets`` with a
``caption_key``; a batch then carries its texts, and held-out samples are scored against the
held-out captions).
Evaluation reports the sample metrics on held-out reconstructions and the embedding metrics
(``zeroshot``, ``retrieval``) of held-out embeddings against the class captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.data.sources import CaptionedSource
from atoken.engine.runconfig import LossTerm
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.metrics.base import guarded
from atoken.tasks.base import (
    ReconstructionParams,
    ReconstructionTask,
    clamp_range,
    evaluate_samples,
)

__all__ = [
    "TextAlignmentTask",
    "embed_in_chunks",
    "evaluate_embeddings",
    "evaluate_semantic",
    "heldout_digits",
]

CHUNK = 128


def embed_in_chunks(tokenizer: Any, samples: Any, modality: str | None = None) -> torch.Tensor:
    """``tokenizer.embed`` of a batch tensor or list of samples in chunks of 128: ``[B, D]``."""
    parts = [
        tokenizer.embed(samples[i : i + CHUNK], modality) for i in range(0, len(samples), CHUNK)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


def evaluate_embeddings(
    tokenizer: Any,
    samples: Any,
    labels: torch.Tensor,
    captions: Sequence[str],
    metrics: dict[str, Any],
    modality: str | None = None,
) -> dict[str, float]:
    """The embedding metrics of ``samples`` (labels ``[B]`` indexing ``captions``)."""
    out: dict[str, float] = {}
    if not metrics:
        return out
    embedding = embed_in_chunks(tokenizer, samples, modality)  # [B, D]
    text = tokenizer.embed_text(list(captions))  # [K, D]
    for name, metric in metrics.items():  # one that raises is a MetricFailure (guarded)
        out.update(guarded(name, partial(_score_embeddings, metric, embedding, text, labels)))
    return out


def _score_embeddings(
    metric: Any, embedding: torch.Tensor, text: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    metric.reset()
    metric.update(embedding, text, labels)
    return metric.compute()


def evaluate_semantic(tokenizer: Any, data: Any, metrics: dict[str, Any]) -> dict[str, float]:
    """The embedding metrics of a :class:`~atoken.data.digits.CaptionedImages` set."""
    return evaluate_embeddings(tokenizer, data.images, data.labels, data.captions, metrics)


def heldout_digits(
    classes: str = "", *, size: int = 64, seed: int = 0, heldout_fraction: float = 0.2
) -> Any:
    """The held-out captioned digits of a run with these ``digits`` source settings (its
    ``size``, ``heldout_fraction`` and ``[run] seed``); ``classes`` is a comma list of digits
    (empty: all ten)."""
    from atoken.data.digits import load_digit_captions

    try:
        chosen = tuple(int(c) for c in classes.split(",") if c.strip())
    except ValueError as exc:
        raise ConfigError(f"digit classes must be a comma list of digits, got {classes!r}") from exc
    return load_digit_captions(
        size=size, classes=chosen, seed=seed, heldout_fraction=heldout_fraction
    )[1]


@attrs.frozen(kw_only=True)
class AlignmentParams(ReconstructionParams):
    """Text alignment keys: ``previews`` and ``clamp`` (default [0, 1])."""

    clamp: tuple[float, ...] = attrs.field(default=(0.0, 1.0), converter=clamp_range)


class TextAlignmentTask(ReconstructionTask):
    """Reconstruct and align with captions in one pass (needs ``[model] text_encoder``)."""

    Params: ClassVar[type] = AlignmentParams
    default_source: ClassVar[str] = "digits"
    default_losses: ClassVar[tuple[LossTerm, ...]] = (
        LossTerm(name="l1", weight=0.2),
        LossTerm(name="siglip", weight=1.0),
        LossTerm(name="kl", weight=1e-8),
    )
    default_metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim", "zeroshot", "retrieval")
    provides: ClassVar[tuple[str, ...]] = ("samples", "terms", "latent", "embeddings")

    def __init__(self, *, spec: Any, context: Any) -> None:
        if context.model.semantic is None:
            raise ConfigError(
                f"[[tasks]] {spec.key}: text alignment needs a text encoder: set [model] "
                "text_encoder (e.g. 'minilm')"
            )
        super().__init__(spec=spec, context=context)
        if not isinstance(self.source, CaptionedSource):
            raise ConfigError(
                f"[[tasks]] {self.label}: text alignment needs a captioned data source (e.g. "
                f"'digits'); {self.spec.data.get('source', self.default_source)!r} has no captions"
            )
        embedding = {k for k, m in self.metrics.items() if getattr(m, "inputs", "") == "embeddings"}
        self.embedding_metrics = {k: self.metrics[k] for k in embedding}
        self.metrics = {k: m for k, m in self.metrics.items() if k not in embedding}

    def batch(self, step: int, micro: int) -> tuple[Any, ...]:
        """``(samples, labels)`` of class captions, or ``(samples, labels, texts)`` of a source
        whose every sample has its own caption."""
        return self.source.labelled_batch(step, micro)

    def batch_texts(self, batch: tuple[Any, ...]) -> tuple[list[str], torch.Tensor]:
        """The batch's distinct captions ``[T]`` and ``positives [B, T]`` (each sample's own)."""
        if len(batch) == 3:  # per-sample captions: equal texts are one caption
            texts = list(batch[2])
            distinct = list(dict.fromkeys(texts))
            where = {t: i for i, t in enumerate(distinct)}
            index = torch.tensor([where[t] for t in texts], dtype=torch.long)  # [B]
            return distinct, index[:, None] == torch.arange(len(distinct))[None, :]
        labels = batch[1]
        present = torch.unique(labels)  # [T]: the batch's distinct class captions
        texts = [self.source.captions[int(i)] for i in present]
        return texts, labels[:, None] == present[None, :]

    def count(self, batch: Any) -> int:
        """The images of the batch (the contrastive loss averages over them)."""
        return len(batch[0])

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        samples = batch[0]
        align = self.wants("embeddings")
        out = model(
            model.prepare(samples, self.modality), decode=self.wants("samples"), embed=align
        )
        extra: dict[str, Any] = {}
        if align:
            texts, positives = self.batch_texts(batch)  # [T], [B, T]
            extra = {
                "text": model.embed_text(texts),  # [T, D]
                "positives": positives.to(samples[0].device if samples else "cpu"),  # [B, T]
                "logit_scale": model.semantic.logit_scale,
                "logit_bias": model.semantic.logit_bias,
                "images": samples,
            }
        total, logs = self.loss_terms(out, samples, extra)
        if align:
            logs["logit_scale"] = float(model.semantic.logit_scale.detach().exp())
        return total, logs

    def reconstruct_heldout(self, model: nn.Module) -> list[torch.Tensor]:
        held = list(self.source.heldout)
        recon: list[torch.Tensor] = []
        for i in range(0, len(held), CHUNK):
            recon += [self._clamp(y) for y in model.reconstruct(held[i : i + CHUNK], self.modality)]
        return recon

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.metrics:
            originals = [x.float().cpu() for x in self.source.heldout]
            recons = self.reconstruct_heldout(model)
            metrics.update(evaluate_samples(self.metrics, recons, originals))
            k = self.params.previews
            if k:
                self.save_previews(originals[:k], recons[:k], out_dir, step)
        metrics.update(
            evaluate_embeddings(
                model,
                list(self.source.heldout),
                self.source.heldout_labels,
                self.source.captions,
                self.embedding_metrics,
                self.modality,
            )
        )
        return metrics


@hookimpl
def register_tasks(register) -> None:
    register("text_alignment", TextAlignmentTask)
