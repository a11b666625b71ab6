"""Contracts of every registered task and data source, used the way ``atoken train`` uses them.

Each registered data source is built with its defaults, or with the data table its factory's
``example_data(folder)`` writes (sources that need a location and have none say so with a
``ConfigError``), gives deterministic batches of float32 samples its modality packs,
and held-out samples with names. Each registered task is built from a bare ``[[tasks]]``
table, trains one step through ``model(batch)`` (a finite loss with gradients) and evaluates.
"""

from __future__ import annotations

import pytest
import torch

import atoken
from atoken.core.errors import ConfigError
from atoken.data import DataSource, SourceContext, build_source
from atoken.engine.runconfig import TaskSpec
from atoken.tasks import Task, TaskContext, build_task
from atoken.testing._samples import as_tensor

REGISTRY = atoken.get_registry()
SMALL = {"batch_size": 1}  # every source takes it; the rest stays at its defaults


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    every = REGISTRY.modalities.names()  # each task's modality, as a run file's tasks add it
    return atoken.Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, text_encoder="minilm", modalities=every
    ).train()


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory):
    """Where components with ``example_data(folder)`` write their small real data once."""
    return tmp_path_factory.mktemp("example_data")


def _example_data(factory, folder) -> dict:
    """A component's own contract data table (``example_data(folder)``), else none."""
    make = getattr(factory, "example_data", None)
    return dict(make(folder)) if callable(make) else {}


def _source(name: str, folder):
    table = {"source": name, **SMALL}
    table.update(_example_data(REGISTRY.data_sources.get(name), folder))
    try:
        return build_source(table, SourceContext(seed=1), where="contract")
    except ConfigError as exc:
        if "needs" in str(exc):  # a location (path, url) is required: nothing to build here
            pytest.skip(f"{name}: {exc}")
        raise


@pytest.mark.parametrize("name", REGISTRY.data_sources.names())
def test_data_source_contract(name, example_folder):
    source = _source(name, example_folder)
    assert isinstance(source, DataSource)
    assert source.modality in REGISTRY.modalities
    batch = source.batch(3, 1)
    again = _source(name, example_folder).batch(3, 1)
    pairs = zip(batch, again, strict=True)
    assert len(batch) == 1 and all(torch.equal(as_tensor(a), as_tensor(b)) for a, b in pairs)
    assert all(as_tensor(x).dtype == torch.float32 for x in batch)
    modality = REGISTRY.modalities.create(source.modality)
    latent = modality.pack(batch)  # the tokenizer can take what the source gives
    assert latent.num_tokens > 0
    assert len(source.heldout) == len(source.heldout_names) >= 1


@pytest.mark.parametrize("name", REGISTRY.tasks.names())
def test_task_contract(name, model, tmp_path, example_folder):
    data = _example_data(REGISTRY.tasks.get(name), example_folder)
    spec = TaskSpec(name=name, params={"previews": 1}, data=data)
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
