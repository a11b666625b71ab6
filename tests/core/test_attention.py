"""Attention backends (the registry-wide contract is in tests/test_contracts.py: every backend
agrees with ``math`` and with running each sample alone), sdpa never builds the batch's
N x N mask, xformers' BlockDiagonalMask equals math's mask, and the default-backend choice."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import atoken
from atoken.core import attention as attention_mod
from atoken.core.attention import (
    attention_math,
    attention_sdpa,
    block_diagonal_mask,
    default_attention_backend,
)
from atoken.testing.strategies import seqlens as seqlens_strategy

HAS_XFORMERS = importlib.util.find_spec("xformers") is not None


def _qkv(lengths: list[int], heads: int, dim: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    return tuple(torch.randn(N, heads, dim, generator=g).to(dtype) for _ in range(3))


def _naive(q, k, v, lengths: list[int]) -> torch.Tensor:
    """The textbook formula, one sample at a time, written without any library attention."""
    out, start = [], 0
    for n in lengths:
        qs, ks, vs = (t[start : start + n].double() for t in (q, k, v))  # [n, H, D]
        logits = torch.einsum("nhd,mhd->hnm", qs, ks) / math.sqrt(q.shape[-1])  # [H, n, n]
        out.append(torch.einsum("hnm,mhd->nhd", logits.softmax(-1), vs))
        start += n
    return torch.cat(out).to(q.dtype) if out else q.new_zeros(q.shape)


@st.composite
def attention_cases(draw: st.DrawFn):
    lengths = draw(seqlens_strategy(min_samples=0, max_samples=6, max_len=24))
    heads = draw(st.integers(1, 3))
    dim = draw(st.sampled_from([4, 8, 16]))
    seed = draw(st.integers(0, 2**31 - 1))
    return lengths, heads, dim, seed


def test_builtin_backends_are_registered() -> None:
    names = atoken.get_registry().attention_backends.names()
    assert {"sdpa", "math"} <= set(names)
    assert ("xformers" in names) == HAS_XFORMERS
    plugin = atoken.get_registry().attention_backends.plugin_of("sdpa")
    assert plugin == "atoken.plugins.attention"


@settings(max_examples=25)
@given(case=attention_cases())
def test_math_matches_the_textbook_formula(case) -> None:
    lengths, heads, dim, seed = case
    q, k, v = _qkv(lengths.tolist(), heads, dim, seed)
    expected = _naive(q, k, v, lengths.tolist())
    assert torch.allclose(attention_math(q, k, v, lengths), expected, atol=1e-5, rtol=1e-5)


def test_samples_do_not_leak_into_each_other() -> None:
    """Changing one sample's keys and values leaves every other sample's output unchanged."""
    lengths = [5, 7, 3]
    q, k, v = _qkv(lengths, 2, 8, 0)
    base = attention_sdpa(q, k, v, lengths)
    k2, v2 = k.clone(), v.clone()
    k2[5:12] += 3.0
    v2[5:12] -= 2.0
    changed = attention_sdpa(q, k2, v2, lengths)
    assert torch.equal(base[:5], changed[:5]) and torch.equal(base[12:], changed[12:])
    assert not torch.allclose(base[5:12], changed[5:12])


def test_sdpa_never_builds_a_mask_for_the_batch(monkeypatch) -> None:
    real = F.scaled_dot_product_attention
    calls = []

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(q.shape), attn_mask))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_mod.F, "scaled_dot_product_attention", spy)
    lengths = [9, 4, 9, 0, 16, 4]
    q, k, v = _qkv(lengths, 2, 8, 1)
    out = attention_sdpa(q, k, v, lengths)
    assert torch.allclose(out, attention_math(q, k, v, lengths), atol=1e-5)
    assert calls, "sdpa must call scaled_dot_product_attention"
    for shape, mask in calls:
        assert mask is None
        assert shape[-2] <= max(lengths)  # a query block never spans two samples
    # equal lengths share one call: 9, 4 and 16 -> three calls
    assert len(calls) == 3


def test_sdpa_gradients_match_math() -> None:
    lengths = [6, 0, 11, 6]
    q, k, v = _qkv(lengths, 2, 8, 3)
    grads = []
    for fn in (attention_sdpa, attention_math):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        (fn(*leaves, lengths) ** 2).sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_sdpa_bf16_is_close_to_fp32() -> None:
    lengths = [10, 3, 10]
    q, k, v = _qkv(lengths, 2, 16, 4)
    out = attention_sdpa(q.bfloat16(), k.bfloat16(), v.bfloat16(), lengths)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), attention_math(q, k, v, lengths), atol=3e-2)


def test_block_diagonal_mask() -> None:
    mask = block_diagonal_mask([2, 0, 3])
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[:2, :2] = True
    expected[2:, 2:] = True
    assert torch.equal(mask, expected)


def test_default_backend_on_cpu_is_sdpa() -> None:
    assert default_attention_backend("cpu") == "sdpa"
    assert default_attention_backend() == "sdpa"


@pytest.mark.skipif(not HAS_XFORMERS, reason="xformers is not installed")
@settings(max_examples=15)
@given(lengths=seqlens_strategy(min_samples=0, max_samples=6, max_len=12))
def test_xformers_block_diagonal_mask_materializes_to_math_mask(lengths) -> None:
    N = int(lengths.sum())
    bias = attention_mod._xformers_bias(lengths)
    dense = bias.materialize((N, N))  # [N, N] additive: 0 inside a sample, -inf across
    expected = block_diagonal_mask(lengths)
    assert torch.equal(dense == 0, expected)
    assert torch.all(torch.isinf(dense[~expected]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not HAS_XFORMERS, reason="xformers is not installed")
def test_xformers_matches_sdpa_on_gpu() -> None:
    if default_attention_backend("cuda") != "xformers":
        pytest.skip("xformers' kernels do not load with this torch build (probe failed)")
    lengths = [17, 0, 64, 5, 64]
    q, k, v = (t.cuda().half() for t in _qkv(lengths, 4, 64, 5))
    xf = atoken.get_registry().attention_backends.create("xformers")
    out = xf(q, k, v, torch.tensor(lengths))
    ref = attention_sdpa(q, k, v, lengths)
    assert torch.allclose(out.float(), ref.float(), atol=2e-3, rtol=2e-3)
