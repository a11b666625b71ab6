"""Contracts of every registered task and data source, used the way ``atoken train`` uses them.

Each registered data source is built with its defaults (sources that need a location say so
with a ``ConfigError``), gives deterministic batches of float32 samples its modality packs,
and held-out samples with names. Each registered task is built from a bare ``[[tasks]]``
table, trains one step through ``model(batch)`` (a finite loss with gradients) and evaluates.
"""

from __future__ import annotations

import pytest
import torch

import atoken
from atoken.core.errors import ConfigError
from atoken.core.runconfig import TaskSpec
from atoken.data import DataSource, SourceContext, build_source
from atoken.tasks import Task, TaskContext, build_task

REGISTRY = atoken.get_registry()
SMALL = {"batch_size": 1}  # every source takes it; the rest stays at its defaults


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return atoken.Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, text_encoder="minilm"
    ).train()


def _source(name: str):
    try:
        return build_source({"source": name, **SMALL}, SourceContext(seed=1), where="contract")
    except ConfigError as exc:
        if "needs" in str(exc):  # a location (path, url) is required: nothing to build here
            pytest.skip(f"{name}: {exc}")
        raise


@pytest.mark.parametrize("name", REGISTRY.data_sources.names())
def test_data_source_contract(name):
    source = _source(name)
    assert isinstance(source, DataSource)
    assert source.modality in REGISTRY.modalities
    batch = source.batch(3, 1)
    again = _source(name).batch(3, 1)
    assert len(batch) == 1 and all(torch.equal(a, b) for a, b in zip(batch, again, strict=True))
    assert all(x.dtype == torch.float32 for x in batch)
    modality = REGISTRY.modalities.create(source.modality)
    latent = modality.pack(batch)  # the tokenizer can take what the source gives
    assert latent.num_tokens > 0
    assert len(source.heldout) == len(source.heldout_names) >= 1


@pytest.mark.parametrize("name", REGISTRY.tasks.names())
def test_task_contract(name, model, tmp_path):
    spec = TaskSpec(name=name, params={"previews": 1})
    try:
        task = build_task(spec, TaskContext(model=model))
    except ConfigError as exc:
        if "name a data source" in str(exc):  # a generic task: the run file names the data
            pytest.skip(f"{name}: {exc}")
        raise
    assert isinstance(task, Task) and task.label == name and task.weight == 1.0
    model.zero_grad(set_to_none=True)
    loss, logs = task.loss(model, task.batch(0, 0))
    assert loss.ndim == 0 and bool(torch.isfinite(loss)) and logs
    loss.backward()
    assert any(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(model, 1, tmp_path)
    model.train()
    assert all(isinstance(v, float) for v in metrics.values())
