"""Data workers: the batches of ``[train] data_workers = N`` are those of 0, bit for bit."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from atoken.core.errors import BadSampleError
from atoken.engine.prefetch import Prefetcher


class NoisyTask:
    """A batch drawn from the global RNG (seeded by the prefetcher as the trainer seeds it)
    and from its own generator."""

    def batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        g = torch.Generator().manual_seed(step * 10 + micro)
        return torch.randn(3, 4, generator=g), torch.rand(2), step


class FailingTask:
    def batch(self, step: int, micro: int) -> list[torch.Tensor]:
        if step == 2:
            raise BadSampleError("shard 'x-000001.tar', sample 'k7': cannot decode its 'jpg'")
        return [torch.zeros(1)]


def _seed(base: int, step: int, micro: int) -> int:
    return base * 1000 + step * 10 + micro


ORDER = [(0, 0), (0, 1), (1, 0), (1, 1), (3, 0), (3, 1), (1, 0), (1, 1), (2, 0)]  # jumps: resumes


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_the_batches_of_no_workers(workers):
    def batches(n: int) -> list:
        p = Prefetcher(NoisyTask(), workers=n, grad_accum=2, end_step=5, seed_of=partial(_seed, 7))
        out = []
        for step, micro in ORDER:
            if n == 0:
                torch.manual_seed(_seed(7, step, micro))  # the trainer's seeding
            out.append(p.get(step, micro))
        p.close()
        return out

    for (a, ra, sa), (b, rb, sb) in zip(batches(0), batches(workers), strict=True):
        assert torch.equal(a, b) and torch.equal(ra, rb) and sa == sb


def test_a_worker_error_arrives_typed_with_its_message():
    p = Prefetcher(FailingTask(), workers=2, grad_accum=1, end_step=4, seed_of=partial(_seed, 0))
    assert p.get(0, 0)[0].shape == (1,)
    p.get(1, 0)
    with pytest.raises(BadSampleError, match=r"x-000001\.tar.*k7"):
        p.get(2, 0)
    p.close()


def test_past_the_end_still_answers():
    p = Prefetcher(NoisyTask(), workers=1, grad_accum=1, end_step=1, seed_of=partial(_seed, 0))
    assert p.get(4, 0)[2] == 4
    p.close()


@pytest.mark.parametrize("key", ["data_workers", "max_bad_samples"])
@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_train_keys_are_validated(key, value):
    from atoken.core.errors import ConfigError
    from atoken.engine.runconfig import RunConfig, structure

    with pytest.raises(ConfigError, match=key):
        structure(RunConfig, {"train": {key: value}}, "top level")
    assert structure(RunConfig, {"train": {key: 0}}, "top level").train.data_workers >= 0
