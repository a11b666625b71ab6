"""Attention backends (the registry-wide contract is in tests/test_contracts.py: every backend
agrees with ``math`` and with running each sample alone), sdpa never builds the batch's
N x N mask, xformers' BlockDiagonalMask equals math's mask, and the default-backend choice.
Then keys packed apart from the queries (``kv_seqlens``): math and sdpa against the textbook
formula, ``call_attention``'s fallback for plain backends, empty inputs and typed errors."""

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
    accepts_kv_seqlens,
    attention_math,
    attention_sdpa,
    attention_xformers,
    block_diagonal_mask,
    call_attention,
    default_attention_backend,
)
from atoken.core.errors import ConfigError
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


# ------------------------------------------------------------------ keys packed apart: kv_seqlens
def _kv_qkv(q_lens: list[int], kv_lens: list[int], heads: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(q_lens), heads, dim, generator=g)
    k, v = (torch.randn(sum(kv_lens), heads, dim, generator=g) for _ in range(2))
    return q, k, v


def _naive_kv(q, k, v, q_lens: list[int], kv_lens: list[int]) -> torch.Tensor:
    """The textbook formula per sample, queries and keys sliced by their own lengths."""
    out, qs, ks = [], 0, 0
    for n, nk in zip(q_lens, kv_lens, strict=True):
        qb = q[qs : qs + n].double()  # [n, H, D]
        kb, vb = (t[ks : ks + nk].double() for t in (k, v))  # [nk, H, D]
        logits = torch.einsum("nhd,mhd->hnm", qb, kb) / math.sqrt(q.shape[-1])  # [H, n, nk]
        out.append(torch.einsum("hnm,mhd->nhd", logits.softmax(-1), vb))  # [n, H, D]
        qs, ks = qs + n, ks + nk
    return torch.cat(out).to(q.dtype) if out else q.new_zeros(q.shape)


@st.composite
def kv_cases(draw: st.DrawFn, *, max_samples: int = 5, max_len: int = 12):
    """(q_lens, kv_lens, heads, dim, seed): a sample with queries has at least one key."""
    q_lens = draw(seqlens_strategy(max_samples=max_samples, max_len=max_len)).tolist()
    kv_lens = [draw(st.integers(1 if n else 0, max_len)) for n in q_lens]
    heads = draw(st.integers(1, 3))
    dim = draw(st.sampled_from([4, 8, 16]))
    return q_lens, kv_lens, heads, dim, draw(st.integers(0, 2**31 - 1))


def _plain(q, k, v, seqlens):
    """A third-party style backend: only the minimal four-argument signature."""
    return attention_math(q, k, v, seqlens)


@settings(max_examples=30)
@given(case=kv_cases())
def test_math_and_sdpa_with_kv_seqlens_match_the_textbook_formula(case) -> None:
    q_lens, kv_lens, heads, dim, seed = case
    q, k, v = _kv_qkv(q_lens, kv_lens, heads, dim, seed)
    expected = _naive_kv(q, k, v, q_lens, kv_lens)
    for fn in (attention_math, attention_sdpa):
        out = fn(q, k, v, torch.tensor(q_lens, dtype=torch.int64), kv_seqlens=kv_lens)
        assert out.shape == q.shape
        assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=30)
@given(case=kv_cases())
def test_fallback_for_a_plain_backend_matches_the_textbook_formula(case) -> None:
    q_lens, kv_lens, heads, dim, seed = case
    q, k, v = _kv_qkv(q_lens, kv_lens, heads, dim, seed)
    assert not accepts_kv_seqlens(_plain)
    out = call_attention(_plain, q, k, v, torch.tensor(q_lens), torch.tensor(kv_lens))
    assert out.shape == q.shape
    assert torch.allclose(out, _naive_kv(q, k, v, q_lens, kv_lens), atol=1e-5, rtol=1e-5)


def test_fallback_pads_queries_up_to_the_keys_and_splits_longer_queries() -> None:
    """A 2-query sample with 5 keys is one segment of 5 rows; 7 queries with 3 keys are three
    segments of 3 (the last padded); a sample without queries is left out."""
    seen = []

    def recording(q, k, v, seqlens):
        seen.append((q.shape[0], k.shape[0], seqlens.tolist()))
        assert q.shape[0] == k.shape[0] == int(seqlens.sum())  # an equal-length problem
        return attention_math(q, k, v, seqlens)

    q_lens, kv_lens = [2, 7, 0], [5, 3, 4]
    q, k, v = _kv_qkv(q_lens, kv_lens, 2, 8, 0)
    out = call_attention(recording, q, k, v, q_lens, kv_lens)
    assert seen == [(14, 14, [5, 3, 3, 3])]
    assert torch.allclose(out, _naive_kv(q, k, v, q_lens, kv_lens), atol=1e-5)


def test_call_attention_passes_kv_seqlens_to_backends_that_name_it(monkeypatch) -> None:
    inspected = []
    real = attention_mod._names_kv_seqlens
    monkeypatch.setattr(
        attention_mod, "_names_kv_seqlens", lambda fn: inspected.append(fn) or real(fn)
    )
    got = []

    def kv_backend(q, k, v, seqlens, *, kv_seqlens=None):
        got.append(kv_seqlens)
        return attention_math(q, k, v, seqlens, kv_seqlens=kv_seqlens)

    def swallowing(q, k, v, seqlens, **kwargs):  # **kwargs may drop it: not trusted
        return attention_math(q, k, v, seqlens)

    q, k, v = _kv_qkv([3, 1], [4, 2], 2, 8, 1)
    for _ in range(3):
        call_attention(kv_backend, q, k, v, [3, 1], [4, 2])
    assert got == [[4, 2]] * 3
    assert inspected == [kv_backend]  # the signature is read once
    assert accepts_kv_seqlens(attention_sdpa) and accepts_kv_seqlens(attention_xformers)
    assert not accepts_kv_seqlens(swallowing)
    out = call_attention(swallowing, q, k, v, [3, 1], [4, 2])
    assert torch.allclose(out, attention_math(q, k, v, [3, 1], kv_seqlens=[4, 2]), atol=1e-5)
    # without kv_seqlens nothing is inspected and the backend is called as it always was
    call_attention(kv_backend, q, q, q, [3, 1])
    assert got[-1] is None


@pytest.mark.parametrize("fn", [attention_math, attention_sdpa, _plain])
def test_empty_inputs_with_and_without_kv_seqlens(fn) -> None:
    H, D = 2, 8
    empty = torch.zeros(0, H, D)
    none = torch.zeros(0, dtype=torch.int64)
    assert call_attention(fn, empty, empty, empty, none).shape == (0, H, D)  # B = 0
    assert call_attention(fn, empty, empty, empty, none, none).shape == (0, H, D)
    assert call_attention(fn, empty, empty, empty, [0, 0]).shape == (0, H, D)
    assert call_attention(fn, empty, empty, empty, [0, 0], [0, 0]).shape == (0, H, D)
    _, k, v = _kv_qkv([0], [5], H, D, 2)
    assert call_attention(fn, empty, k, v, [0], [5]).shape == (0, H, D)  # keys, no queries
    # a sample with zero queries and keys between two others does not disturb them
    q_lens, kv_lens = [2, 0, 3, 0], [3, 4, 1, 0]
    q, k, v = _kv_qkv(q_lens, kv_lens, H, D, 3)
    out = call_attention(fn, q, k, v, q_lens, kv_lens)
    assert torch.allclose(out, _naive_kv(q, k, v, q_lens, kv_lens), atol=1e-5)


@pytest.mark.parametrize("fn", [attention_math, attention_sdpa, _plain])
def test_inconsistent_kv_seqlens_are_typed_errors(fn) -> None:
    q, k, v = _kv_qkv([2, 1], [3, 0], 2, 8, 4)
    with pytest.raises(ConfigError, match="no keys"):
        call_attention(fn, q, k, v, [2, 1], [3, 0])
    with pytest.raises(ConfigError, match="samples"):
        call_attention(fn, q, k, v, [2, 1], [3])
    with pytest.raises(ConfigError, match="rows"):
        call_attention(fn, q, k, v, [2, 1], [2, 2])
    with pytest.raises(ConfigError, match="rows"):
        call_attention(fn, q, k, v, [1, 1], [3, 0])


def test_sdpa_with_kv_seqlens_groups_equal_length_pairs(monkeypatch) -> None:
    real = F.scaled_dot_product_attention
    calls = []

    def spy(q, k, v, attn_mask=None, **kwargs):
        calls.append((tuple(q.shape), tuple(k.shape), attn_mask))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_mod.F, "scaled_dot_product_attention", spy)
    q_lens, kv_lens = [3, 3, 0, 3, 2], [5, 5, 4, 6, 5]
    q, k, v = _kv_qkv(q_lens, kv_lens, 2, 8, 5)
    out = attention_sdpa(q, k, v, q_lens, kv_seqlens=kv_lens)
    assert torch.allclose(out, _naive_kv(q, k, v, q_lens, kv_lens), atol=1e-5)
    # (3, 5) twice -> one call of two; (3, 6) and (2, 5) alone; the sample without queries none
    assert sorted((s[0], s[2], t[2]) for s, t, _ in calls) == [(1, 2, 5), (1, 3, 6), (2, 3, 5)]
    assert all(mask is None for *_, mask in calls)
    calls.clear()
    q, k, v = _kv_qkv([2, 2], [7, 7], 2, 8, 6)  # one (q, k) pair: a [B, L, H, D] view
    attention_sdpa(q, k, v, [2, 2], kv_seqlens=[7, 7])
    assert [c[:2] for c in calls] == [((2, 2, 2, 8), (2, 2, 7, 8))]


def test_sdpa_and_fallback_gradients_with_kv_seqlens_match_math() -> None:
    q_lens, kv_lens = [2, 0, 5, 2], [6, 3, 5, 6]
    q, k, v = _kv_qkv(q_lens, kv_lens, 2, 8, 7)
    grads = []
    for fn in (attention_sdpa, _plain, attention_math):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        (call_attention(fn, *leaves, q_lens, kv_lens) ** 2).sum().backward()
        grads.append([t.grad for t in leaves])
    for other in grads[:2]:
        for a, b in zip(other, grads[2], strict=True):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert float(grads[2][1][6:9].abs().sum()) == 0  # keys of the query-less sample: no grad


def test_kv_block_diagonal_mask() -> None:
    mask = block_diagonal_mask([1, 0, 2], [2, 3, 1])
    expected = torch.zeros(3, 6, dtype=torch.bool)
    expected[0, :2] = True
    expected[1:, 5:] = True
    assert torch.equal(mask, expected)


@pytest.mark.skipif(not HAS_XFORMERS, reason="xformers is not installed")
@settings(max_examples=15)
@given(case=kv_cases(max_len=8))
def test_xformers_kv_mask_materializes_to_math_mask(case) -> None:
    q_lens, kv_lens, *_ = case
    kept = [b for b, n in enumerate(q_lens) if n]  # samples without queries are dropped
    q_kept, kv_kept = [q_lens[b] for b in kept], [kv_lens[b] for b in kept]
    bias = attention_mod._xformers_bias(q_lens, kv_lens)
    dense = bias.materialize((sum(q_kept), sum(kv_kept)))  # [N, Nk'] additive
    assert torch.equal(dense == 0, block_diagonal_mask(q_kept, kv_kept))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not HAS_XFORMERS, reason="xformers is not installed")
def test_xformers_with_kv_seqlens_matches_sdpa_on_gpu() -> None:
    if default_attention_backend("cuda") != "xformers":
        pytest.skip("xformers' kernels do not load with this torch build (probe failed)")
    q_lens, kv_lens = [17, 0, 64, 5, 0], [40, 9, 64, 70, 0]
    q, k, v = (t.cuda().half() for t in _kv_qkv(q_lens, kv_lens, 4, 64, 8))
    out = attention_xformers(q, k, v, torch.tensor(q_lens), kv_seqlens=torch.tensor(kv_lens))
    ref = attention_sdpa(q, k, v, q_lens, kv_seqlens=kv_lens)
    assert torch.allclose(out.float(), ref.float(), atol=2e-3, rtol=2e-3)
    empty = q[:0]
    assert attention_xformers(empty, k[:9], v[:9], [0], kv_seqlens=[9]).shape == (0, 4, 64)


def test_the_backend_contract_catches_a_backend_that_mixes_samples() -> None:
    """A backend that takes ``kv_seqlens`` but lets every query see every key must fail the
    contract; the correct built-in passes the same case."""
    from atoken.testing.contracts import AttentionBackendContract

    def leaky(q, k, v, seqlens, *, kv_seqlens=None):
        n = q.shape[0] if kv_seqlens is None else k.shape[0]
        return attention_math(q, k, v, [q.shape[0]], kv_seqlens=[n])

    contract = AttentionBackendContract()
    case = (torch.tensor([2, 3]), torch.tensor([4, 1])), 2, 8, 0
    test = contract.test_kv_seqlens_match_math_natively_and_by_fallback.hypothesis.inner_test
    test(contract, attention_sdpa, *case)
    with pytest.raises(AssertionError):
        test(contract, leaky, *case)
