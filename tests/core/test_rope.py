"""Rope4D: relative-position invariance, norm preservation, identity at zero, the official and
the rotate-half layouts, fp32 computation and typed errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import atoken
from atoken.core.errors import ConfigError
from atoken.core.rope import Rope4D

VARIANTS = [
    {"pair_layout": "interleaved", "frequencies": "atoken"},
    {"pair_layout": "half", "frequencies": "axial"},
    {"pair_layout": "interleaved", "frequencies": "axial", "axis_order": (0, 2, 1, 3)},
]


@st.composite
def rope_cases(draw: st.DrawFn, *, max_tokens: int = 12, max_coord: int = 40):
    """(rope, q [n, H, D], k [n, H, D], coords [n, 4], shift [4]) drawn from Hypothesis."""
    head_dim = draw(st.sampled_from([8, 16, 24, 72]))
    heads = draw(st.integers(1, 3))
    n = draw(st.integers(0, max_tokens))
    variant = draw(st.sampled_from(VARIANTS))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, heads, head_dim, generator=g)
    k = torch.randn(n, heads, head_dim, generator=g)
    coords = torch.randint(0, max_coord, (n, 4), generator=g, dtype=torch.int32)
    shift = torch.tensor(
        draw(st.lists(st.integers(0, 500), min_size=4, max_size=4)), dtype=torch.int32
    )
    return Rope4D(head_dim, **variant), q, k, coords, shift


def _logits(rope: Rope4D, q: torch.Tensor, k: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    rq, rk = rope(q, coords), rope(k, coords)  # [n, H, D]
    return torch.einsum("nhd,mhd->hnm", rq, rk)  # [H, n, n]


@settings(max_examples=30)
@given(case=rope_cases())
def test_logits_depend_only_on_coordinate_differences(case) -> None:
    rope, q, k, coords, shift = case
    before = _logits(rope, q, k, coords)
    after = _logits(rope, q, k, coords + shift)  # translate the whole sample
    assert torch.allclose(before, after, atol=1e-3, rtol=1e-4)


@settings(max_examples=30)
@given(case=rope_cases())
def test_norms_are_preserved(case) -> None:
    rope, q, _, coords, _ = case
    out = rope(q, coords)
    assert torch.allclose(out.norm(dim=-1), q.norm(dim=-1), atol=1e-5, rtol=1e-5)


@settings(max_examples=20)
@given(case=rope_cases())
def test_zero_coords_are_the_identity(case) -> None:
    rope, q, _, coords, _ = case
    assert torch.equal(rope(q, torch.zeros_like(coords)), q)


def test_positions_actually_rotate() -> None:
    """The invariance tests would pass for an identity map; this one would not."""
    rope = Rope4D(16)
    x = torch.randn(2, 1, 16)
    coords = torch.tensor([[0, 3, 0, 0], [0, 0, 5, 0]], dtype=torch.int32)
    assert not torch.allclose(rope(x, coords), x)


def test_official_layout_pairs_frequencies_and_axis_order() -> None:
    """D = 72: quarters of 18 channels, interleaved pairs, frequency 10000^(-i/72) on every axis;
    axis_order (0, 2, 1, 3) feeds the row (y) to the second quarter, as the release does."""
    D, P = 72, 9
    rope = Rope4D(D, axis_order=(0, 2, 1, 3))
    expected = torch.tensor([10000.0 ** (-i / D) for i in range(P)])
    for axis in range(4):
        assert torch.allclose(rope.inv_freq[axis], expected)
    c = torch.tensor([[2, 5, 7, 3]], dtype=torch.int32)  # (t, x, y, z)
    quarter_coord = [2, 7, 5, 3]  # (t, y, x, z)
    for quarter in range(4):
        for i in (0, 4, 8):
            x = torch.zeros(1, 1, D)
            x[0, 0, quarter * 18 + 2 * i] = 1.0  # the real part of pair i
            out = rope(x, c)[0, 0]
            angle = quarter_coord[quarter] * expected[i].item()
            assert out[quarter * 18 + 2 * i].item() == pytest.approx(math.cos(angle), abs=1e-6)
            assert out[quarter * 18 + 2 * i + 1].item() == pytest.approx(math.sin(angle), abs=1e-6)
            others = torch.ones(D, dtype=torch.bool)
            others[[quarter * 18 + 2 * i, quarter * 18 + 2 * i + 1]] = False
            assert torch.all(out[others] == 0)


def test_rotate_half_layout_pairs_channel_i_with_i_plus_p() -> None:
    D, P = 32, 4  # quarters of 8 channels, 4 pairs each
    rope = Rope4D(D, pair_layout="half", frequencies="axial")
    expected = torch.tensor([10000.0 ** (-2 * i / 8) for i in range(P)])
    assert torch.allclose(rope.inv_freq[1], expected)
    c = torch.tensor([[0, 3, 0, 0]], dtype=torch.int32)  # x = 3 rotates quarter 1 only
    for i in range(P):
        x = torch.zeros(1, 1, D)
        x[0, 0, 8 + i] = 1.0
        out = rope(x, c)[0, 0]
        angle = 3 * expected[i].item()
        assert out[8 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)
        assert out[8 + i + P].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert float(out.abs().sum()) == pytest.approx(abs(math.cos(angle)) + abs(math.sin(angle)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_is_rotated_in_fp32(dtype: torch.dtype) -> None:
    rope = Rope4D(16, pair_layout="half", frequencies="axial")
    x = torch.randn(5, 2, 16).to(dtype)
    coords = torch.randint(0, 1000, (5, 4), dtype=torch.int32)
    out = rope(x, coords)
    assert out.dtype == dtype
    assert torch.equal(out, rope(x.float(), coords).to(dtype))


def test_tables_are_unit_rotations_shared_by_stacked_q_and_k() -> None:
    for layout in ("half", "interleaved"):
        rope = Rope4D(24, pair_layout=layout, frequencies="axial")
        coords = torch.randint(0, 50, (7, 4), dtype=torch.int32)
        tables = rope.tables(coords)
        assert tables.dtype == torch.complex64 and tables.shape == (7, 1, 12)
        assert torch.allclose(tables.abs(), torch.ones(7, 1, 12))
        q, k = torch.randn(7, 3, 24), torch.randn(7, 3, 24)
        both = rope.apply(torch.stack((q, k), 1), tables)  # [N, 2, H, D]
        assert torch.equal(both[:, 0], rope(q, coords))
        assert torch.equal(both[:, 1], rope(k, coords))
        view = torch.randn(7, 3, 3, 24)[:, 1]  # a strided view (odd offsets) still works
        assert torch.equal(rope(view, coords), rope(view.contiguous(), coords))


def test_gradcheck() -> None:
    rope = Rope4D(8)
    x = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    coords = torch.randint(0, 9, (3, 4), dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda t: rope(t, coords), (x,))


def test_exported_from_the_package() -> None:
    assert atoken.Rope4D is Rope4D


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head_dim": 12},
        {"head_dim": 0},
        {"head_dim": 16, "pair_layout": "rotate"},
        {"head_dim": 16, "frequencies": "llama"},
        {"head_dim": 16, "theta": 1.0},
        {"head_dim": 16, "axis_order": (0, 1, 1, 3)},
    ],
)
def test_bad_settings_raise_config_error(kwargs) -> None:
    with pytest.raises(ConfigError):
        Rope4D(**kwargs)


def test_bad_shapes_raise_config_error() -> None:
    rope = Rope4D(16)
    with pytest.raises(ConfigError, match="x must be"):
        rope(torch.zeros(3, 2, 8), torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ConfigError, match="coords must be"):
        rope(torch.zeros(3, 2, 16), torch.zeros(3, 3, dtype=torch.int32))
