"""The set distances (``chamfer`` loss and metric, ``emd`` metric) against brute force, for
sets of different sizes, any row order, and the 3D family's Gaussians."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atoken.core.errors import ModalityInputError
from atoken.losses.sets import ChamferLoss, chamfer_distance, matched_distance
from atoken.plugins.manager import get_registry


def _brute_chamfer(p: torch.Tensor, t: torch.Tensor) -> float:
    d = [[float(((a - b) ** 2).sum()) for b in t] for a in p]
    return sum(min(r) for r in d) / len(p) + sum(min(c) for c in zip(*d, strict=True)) / len(t)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(1, 7), d=st.integers(1, 4), seed=st.integers(0, 999))
def test_chamfer_equals_brute_force_and_ignores_row_order(n, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    p, t = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    got = float(chamfer_distance(p, t))
    assert got == pytest.approx(_brute_chamfer(p, t), rel=1e-4, abs=1e-5)
    assert float(chamfer_distance(p[torch.randperm(n)], t.flip(0))) == pytest.approx(got, rel=1e-5)
    assert float(chamfer_distance(t, p)) == pytest.approx(got, rel=1e-5)  # symmetric
    assert float(chamfer_distance(p, p)) == 0.0


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 999))
def test_emd_is_the_best_matching_by_brute_force(n, seed):
    g = torch.Generator().manual_seed(seed)
    p, t = torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)
    best = min(
        sum(float((p[i] - t[j]).norm()) for i, j in enumerate(perm)) / n
        for perm in itertools.permutations(range(n))
    )
    assert matched_distance(p, t) == pytest.approx(best, rel=1e-5, abs=1e-6)
    assert matched_distance(p[torch.randperm(n)], t) == pytest.approx(best, rel=1e-5, abs=1e-6)


def test_chamfer_of_sets_in_chunks_equals_one_pass():
    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(9000, 3, generator=g), torch.randn(300, 3, generator=g)  # > one chunk
    whole = (torch.cdist(p, t) ** 2).amin(1).mean() + (torch.cdist(t, p) ** 2).amin(1).mean()
    assert float(chamfer_distance(p, t)) == pytest.approx(float(whole), rel=1e-5)


def test_the_loss_trains_sets_of_other_sizes_and_names_bad_input():
    loss = ChamferLoss(dims=3)
    p = [torch.zeros(4, 6, requires_grad=True), torch.zeros(2, 6, requires_grad=True)]
    t = [torch.ones(7, 6), torch.ones(1, 6)]
    value = loss(p, t, {})
    value.backward()
    assert float(value.detach()) == pytest.approx(6.0)  # 3 squared units each way: positions
    assert all(x.grad is not None and float(x.grad.abs().sum()) > 0 for x in p)
    with pytest.raises(ModalityInputError, match="2 predicted and 1 target"):
        loss(p, t[:1], {})
    with pytest.raises(ModalityInputError, match=r"non-empty \[n, d\]"):
        loss([torch.zeros(0, 6)], [torch.ones(2, 6)], {})
    with pytest.raises(ModalityInputError, match="dims=3"):
        loss([torch.zeros(2, 2)], [torch.ones(2, 2)], {})


def test_the_3d_familys_gaussians_are_sets_to_the_distances_and_metrics():
    from atoken.modalities.mesh.gaussians import GaussianSet

    def gaussians(means: torch.Tensor) -> GaussianSet:
        G = len(means)
        return GaussianSet(
            means=means,
            scales=torch.full((G, 3), 0.1),
            quats=torch.tensor([[1.0, 0, 0, 0]]).expand(G, 4),
            opacities=torch.ones(G),
            sh0=torch.zeros(G, 3),
        )

    a, b = gaussians(torch.zeros(3, 3)), gaussians(torch.ones(5, 3))
    assert float(chamfer_distance(a, b, dims=3)) == pytest.approx(6.0)
    assert float(chamfer_distance(a, b)) == pytest.approx(6.0)  # same colours
    metric = get_registry().metrics.create("chamfer", dims=3)
    metric.update([a], [b])
    assert metric.compute() == {"chamfer": pytest.approx(6.0)}
