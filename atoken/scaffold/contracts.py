"""Contracts of the training components: data sources, metrics and tasks.

``atoken plugins check`` runs them, beside the contracts of :mod:`atoken.testing`, over the
data sources, metrics and tasks one plugin registered; atoken's own suite runs the data-source
and task contracts over every registered one (``tests/test_task_contracts.py``) and checks
the metric protocol in ``tests/plugins/test_metrics.py``, the way ``atoken train`` uses them:

* a data source is built from ``{source = NAME, batch_size = 1}`` (plus the table its
  factory's ``example_data(folder)`` writes, if it has one), gives the same float32 samples
  for the same ``(step, micro)``, samples its modality packs, and named held-out samples;
* a metric raises ``ConfigError`` before its first ``update``, scores noisy copies of
  samples of its modality (its ``modality`` attribute, images by default) with finite floats,
  and forgets them on ``reset``;
* a task is built from a bare ``[[tasks]]`` table (its label the name, weight 1), trains one
  step through the tiny preset (a finite loss with gradients) and evaluates to floats.

A source or task that needs a location it was not given (a ``ConfigError`` saying so) is
skipped, not failed, unless the subclass sets ``skip_unbuildable = False`` (atoken's own suite
does: every built-in component gives ``example_data``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.plugins.manager import get_registry
from atoken.testing.contracts import as_tensor, random_sets

__all__ = ["DataSourceContract", "MetricContract", "TaskContract"]


def _example_data(factory: Any, folder: Path) -> dict[str, Any]:
    """A component's own contract data table (``example_data(folder)``), else none."""
    make = getattr(factory, "example_data", None)
    return dict(make(folder)) if callable(make) else {}


class DataSourceContract:
    """Set ``source_name``: deterministic float32 batches its modality packs, held-out
    samples with names."""

    source_name: ClassVar[str] = ""
    skip_unbuildable: ClassVar[bool] = True

    def _source(self, folder: Path) -> Any:
        from atoken.data import SourceContext, build_source

        factory = get_registry().data_sources.get(self.source_name)
        table = {"source": self.source_name, "batch_size": 1, **_example_data(factory, folder)}
        try:
            return build_source(table, SourceContext(seed=1), where="contract")
        except ConfigError as exc:
            if self.skip_unbuildable and "needs" in str(exc):  # a location is required
                pytest.skip(f"{self.source_name}: {exc}")
            raise

    def test_batches_are_deterministic_and_pack(self, tmp_path: Path) -> None:
        from atoken.data import DataSource

        source = self._source(tmp_path)
        assert isinstance(source, DataSource), "lacks modality, batch, heldout or heldout_names"
        assert source.modality in get_registry().modalities, f"modality {source.modality!r}"
        batch, again = source.batch(3, 1), self._source(tmp_path).batch(3, 1)
        assert len(batch) == 1, f"batch_size = 1 gave {len(batch)} samples"
        for a, b in zip(batch, again, strict=True):
            assert torch.equal(as_tensor(a), as_tensor(b)), "batch (3, 1) differs between runs"
            assert as_tensor(a).dtype == torch.float32, f"samples are {as_tensor(a).dtype}"
        modality = get_registry().modalities.create(source.modality)
        assert modality.pack(batch).num_tokens > 0, "the samples give no tokens"

    def test_heldout_samples_are_named(self, tmp_path: Path) -> None:
        source = self._source(tmp_path)
        assert len(source.heldout) == len(source.heldout_names) >= 1


class MetricContract:
    """Set ``metric_name`` (and ``metric_params``): ``compute`` before ``update`` is a
    ``ConfigError``; noisy copies of samples of its modality score finite floats."""

    metric_name: ClassVar[str] = ""
    metric_params: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def metric(self) -> Any:
        registry = get_registry().metrics
        if getattr(registry.get(self.metric_name), "inputs", "") == "embeddings":
            pytest.skip(f"{self.metric_name}: a metric of embeddings (not of samples)")
        try:
            return registry.create(self.metric_name, **self.metric_params)
        except WeightsNotFoundError as exc:  # pretrained weights not on this machine
            pytest.skip(str(exc))

    def _pairs(self, metric: Any, seed: int) -> tuple[Any, Any]:
        from atoken.modalities import DEFAULT_MODALITY

        if "set" in getattr(metric, "accepts", ()):  # a metric of sets (chamfer, emd)
            return random_sets(seed)
        g = torch.Generator().manual_seed(seed)
        modality = getattr(metric, "modality", DEFAULT_MODALITY)
        if modality == DEFAULT_MODALITY:  # a batch of pictures [B, 3, H, W] in [0, 1]
            target = torch.rand(3, 3, 40, 36, generator=g)
            return (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1), target
        target = get_registry().modalities.create(modality).examples(seed)
        noisy = [x + 0.05 * torch.randn(x.shape, generator=g) for x in target]
        return noisy, target

    def test_scores_finite_floats_and_resets(self, metric: Any) -> None:
        with pytest.raises(ConfigError):
            metric.compute()  # nothing seen yet
        for seed in (0, 1):
            metric.update(*self._pairs(metric, seed))
        out = metric.compute()
        assert out, "compute() returned no metric"
        for key, value in out.items():
            assert isinstance(key, str) and isinstance(value, float), f"{key!r}: {value!r}"
            assert math.isfinite(value), f"{key!r} = {value}"
        metric.reset()
        with pytest.raises(ConfigError):
            metric.compute()  # reset forgets what it saw


class TaskContract:
    """Set ``task_name``: built from a bare ``[[tasks]]`` table, one training step gives a
    finite loss with gradients, and evaluation gives floats."""

    task_name: ClassVar[str] = ""
    skip_unbuildable: ClassVar[bool] = True

    @pytest.fixture
    def model(self) -> Any:
        from atoken.tokenizer import Tokenizer

        torch.manual_seed(0)
        every = get_registry().modalities.names()  # each task's modality, as a run file adds it
        return Tokenizer.from_preset(
            "tiny", depth=1, decoder_depth=1, text_encoder="minilm", modalities=every
        ).train()

    def test_trains_one_step_and_evaluates(self, model: Any, tmp_path: Path) -> None:
        from atoken.engine.runconfig import TaskSpec
        from atoken.tasks import Task, TaskContext, build_task

        factory = get_registry().tasks.get(self.task_name)
        data = _example_data(factory, tmp_path)
        spec = TaskSpec(name=self.task_name, params={"previews": 1}, data=data)
        try:
            task = build_task(spec, TaskContext(model=model))
        except ConfigError as exc:
            if self.skip_unbuildable and "name a data source" in str(exc):  # a generic task
                pytest.skip(f"{self.task_name}: {exc}")
            raise
        assert isinstance(task, Task), "lacks label, weight, modality, batch, loss or evaluate"
        assert task.label == self.task_name and task.weight == 1.0, (task.label, task.weight)
        model.zero_grad(set_to_none=True)  # a model shared between tasks starts clean
        loss, logs = task.loss(model, task.batch(0, 0))
        assert loss.ndim == 0 and bool(torch.isfinite(loss)), f"loss {loss}"
        assert logs, "the loss logs no terms"
        loss.backward()
        assert any(p.grad is not None for p in model.parameters()), "no gradient reached"
        model.eval()
        try:
            with torch.no_grad():
                metrics = task.evaluate(model, 1, tmp_path / "eval")
        finally:
            model.train()
        assert all(isinstance(v, float) for v in metrics.values()), metrics
