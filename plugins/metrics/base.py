"""The shape every metric has, a running mean of per-image values, and a metric that failed.

Shapes: B images per update, as ``[B, 3, H, W]`` or a list of ``[3, H_i, W_i]`` in [0, 1].

A metric that cannot run on the data of an evaluation does not stop it (nor the run):
:func:`guarded` puts a :class:`MetricFailure` (NaN, with its reason) where its value would be,
and :func:`split_failures` takes the failures out of a metrics dict for the log.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from atoken.core.errors import ConfigError
from atoken.losses.image_batch import ImageBatch, image_pairs

__all__ = [
    "ImageMetric",
    "MetricFailure",
    "PerImageMetric",
    "guarded",
    "metric_scores",
    "split_failures",
]


def metric_scores(metric: Any, modality: str, kind: str) -> bool:
    """Whether ``metric`` (a metric or its factory) scores samples of ``modality`` whose
    ``sample_kind`` is ``kind``: a metric that names the one modality it scores
    (``modality = "depth"``) scores that one; else one that declares kinds (``accepts``)
    scores those; else any."""
    named = getattr(metric, "modality", None)
    if isinstance(named, str) and named:
        return named == modality
    accepts = tuple(getattr(metric, "accepts", ()) or ())
    return not accepts or kind in accepts


class ImageMetric(abc.ABC):
    """``reset()``, ``update(prediction, target)``, ``compute() -> dict[str, float]``.

    ``distributional`` is True for a metric of two image distributions (a Fréchet distance),
    which needs many images and does not pair them; False for a per-image score.
    ``accepts``: the kinds of samples it scores (``atoken.core.sample_files.SAMPLE_KINDS``:
    ``"picture"``, ``"clip"``, ``"set"``...; empty: any); a task that would give it another
    kind is a ``ConfigError`` when the run is built, naming the task, metric and modality.
    """

    name: str = ""
    distributional: bool = False
    accepts: tuple[str, ...] = ()

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every image seen."""

    @abc.abstractmethod
    def update(self, prediction: ImageBatch, target: ImageBatch) -> None:
        """Add a batch of (reconstruction, original) pairs."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric over everything seen since the last reset."""


class PerImageMetric(ImageMetric):
    """A metric that scores each (prediction, target) pair and reports the mean score."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._total = 0.0
        self._count = 0

    @abc.abstractmethod
    def score(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image scores ``[B]`` of two batches ``[B, 3, H, W]`` of one size."""

    @torch.no_grad()
    def update(self, prediction: ImageBatch, target: ImageBatch) -> None:
        preds, targets = image_pairs(prediction, target, who=self.name)
        if isinstance(prediction, torch.Tensor) and isinstance(target, torch.Tensor):
            scores = self.score(prediction.float(), target.float())  # one batch, one size
        else:
            scores = torch.cat(
                [
                    self.score(p[None].float(), t[None].float())
                    for p, t in zip(preds, targets, strict=True)
                ]
            )  # [B]
        self._total += float(scores.double().sum())
        self._count += scores.numel()

    def compute(self) -> dict[str, float]:
        if not self._count:
            raise ConfigError(f"{self.name}: no images yet; call update() before compute()")
        return {self.name: self._total / self._count}


class MetricFailure(float):
    """A metric that could not be computed, where its value would be in a metrics dict: NaN
    as a number, with ``reason`` (``"ModalityInputError: fd_effnet: images is an empty
    batch"``). It formats as ``failed: <reason>`` (a printed table says why) and pickles with
    its reason (the ranks share an evaluation)."""

    reason: str

    def __new__(cls, reason: str) -> MetricFailure:
        failure = super().__new__(cls, math.nan)
        failure.reason = reason
        return failure

    def __format__(self, spec: str) -> str:
        return f"failed: {self.reason}"

    def __repr__(self) -> str:
        return f"MetricFailure({self.reason!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (MetricFailure, (self.reason,))


def guarded(name: str, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``compute()``, or ``{name: MetricFailure(reason)}`` when it raises: one metric that
    cannot run on an evaluation's data loses neither the other metrics nor the run."""
    try:
        return compute()
    except Exception as exc:  # any error of the metric: logged with its reason
        return {name: MetricFailure(f"{type(exc).__name__}: {exc}")}


def split_failures(metrics: Mapping[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """``(values, failures)`` of a metrics dict: the numbers, and the reason of each
    :class:`MetricFailure` by key."""
    values = {k: v for k, v in metrics.items() if not isinstance(v, MetricFailure)}
    failed = {k: v.reason for k, v in metrics.items() if isinstance(v, MetricFailure)}
    return values, failed
