"""The ``zeroshot`` and ``retrieval`` metrics on hand-built embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import atoken
from atoken.core.errors import ConfigError, EmbeddingSizeError, ModalityInputError
from atoken.plugins.metrics.semantic import recall_at_k

REGISTRY = atoken.get_registry()
EMBEDDING_METRICS = [
    n
    for n in REGISTRY.metrics.names()
    if getattr(REGISTRY.metrics.get(n), "inputs", "") == "embeddings"
]


def test_builtin_embedding_metrics_are_registered():
    assert {"zeroshot", "retrieval"} <= set(EMBEDDING_METRICS)


@pytest.mark.parametrize("name", EMBEDDING_METRICS)
def test_every_embedding_metric_follows_the_protocol(name):
    metric = REGISTRY.metrics.create(name)
    with pytest.raises(ConfigError):
        metric.compute()
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    for _ in range(2):
        metric.update(F.normalize(torch.randn(5, 8, generator=g), dim=-1), text, torch.arange(5))
    out = metric.compute()
    assert out and all(isinstance(v, float) and 0 <= v <= 1 for v in out.values())
    metric.reset()
    with pytest.raises(ConfigError):
        metric.compute()
    with pytest.raises(EmbeddingSizeError):
        metric.update(torch.rand(2, 8), torch.rand(2, 7), torch.arange(2))
    with pytest.raises(ModalityInputError):
        metric.update(torch.rand(2, 8), torch.rand(2, 8), torch.tensor([0, 2]))  # out of range


def test_zeroshot_accuracy_by_hand():
    classes = torch.eye(3)  # prompts of classes 0, 1, 2
    image = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0.9, 0.1], [0.2, 0, 1.0]])
    labels = torch.tensor([0, 1, 2, 2])  # the third image is wrong (closest to class 1)
    metric = REGISTRY.metrics.create("zeroshot")
    metric.update(image[:2], classes, labels[:2])
    metric.update(image[2:], classes, labels[2:])
    assert metric.compute() == {"zeroshot_top1": pytest.approx(0.75)}
    with pytest.raises(ConfigError):
        metric.update(image, torch.eye(3)[[1, 0, 2]], labels)  # other prompts


def test_zeroshot_top5_with_many_classes():
    classes = torch.eye(6)
    image = torch.tensor([[0.5, 0.4, 0.3, 0.2, 0.1, 0.0]])  # class 5 ranks last
    metric = REGISTRY.metrics.create("zeroshot")
    metric.update(image, classes, torch.tensor([5]))
    assert metric.compute() == {"zeroshot_top1": 0.0, "zeroshot_top5": 0.0}
    metric.reset()
    metric.update(image, classes, torch.tensor([4]))
    assert metric.compute() == {"zeroshot_top1": 0.0, "zeroshot_top5": 1.0}


def test_retrieval_by_hand_with_shared_captions():
    text = torch.eye(2)  # two class captions
    image = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.6]])
    targets = torch.tensor([0, 0, 1])  # image 2 is closer to caption 0: an i2t miss
    i2t, t2i = recall_at_k(image, text, targets, 1)
    assert i2t == pytest.approx(2 / 3)
    assert t2i == pytest.approx(1.0)  # caption 0 -> image 0, caption 1 -> image 2 (0.6 best)


@given(n=st.integers(1, 8), seed=st.integers(0, 2**16), noise=st.floats(0.0, 0.2))
def test_paired_retrieval_of_near_identical_orthogonal_embeddings_is_perfect(n, seed, noise):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    text = q[:n].float()  # orthonormal rows
    image = F.normalize(text + noise * torch.randn(n, 8, generator=g) / 8, dim=-1)
    metric = REGISTRY.metrics.create("retrieval")
    metric.update(image, text, torch.arange(n))
    assert metric.compute() == {"i2t_r1": 1.0, "t2i_r1": 1.0, "i2t_r5": 1.0, "t2i_r5": 1.0}
    shuffled = torch.roll(torch.arange(n), 1)  # every image now names the wrong caption
    metric.reset()
    metric.update(image, text, shuffled)
    if n > 1:
        assert metric.compute()["i2t_r1"] == 0.0


def test_retrieval_pools_updates_with_text_offsets():
    metric = REGISTRY.metrics.create("retrieval")
    metric.update(torch.eye(2), torch.eye(2), torch.arange(2))
    metric.update(torch.eye(2), torch.eye(2), torch.arange(2))  # the same captions again
    out = metric.compute()
    # Each image's own caption ties with its copy from the other update: top-1 is either one.
    assert out["i2t_r5"] == 1.0 and out["t2i_r5"] == 1.0
