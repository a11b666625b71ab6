"""Attention over packed samples: each sample attends only to its own tokens.

Shapes:
    B  samples
    N  tokens of all samples packed back to back, N = sum(seqlens)
    Nk keys and values of all samples packed back to back, Nk = sum(kv_seqlens)
    H  heads
    D  head dimension
    q, out: [N, H, D]; k, v: [N, H, D] (or [Nk, H, D] with kv_seqlens)
    seqlens, kv_seqlens: int64 [B] (zero-length samples allowed)

An attention backend is a function ``fn(q, k, v, seqlens) -> out`` computing, for every sample
``b`` with rows ``s:e``, ``softmax(q[s:e] k[s:e]^T / sqrt(D)) v[s:e]`` per head (non-causal).
A backend may also take a keyword ``kv_seqlens``: then the queries are packed by ``seqlens``
and the keys and values by ``kv_seqlens`` (sample b's queries see exactly sample b's keys),
which is what the decoder's KV cache needs (queries of one tile, keys of cache + tile). A sample
with zero queries is fine whatever its keys (it contributes no rows); a sample with queries but
no keys has nothing to attend to and raises ``ConfigError``.

Call a backend with :func:`call_attention`: it passes ``kv_seqlens`` to a backend whose
signature names it (checked once per function) and otherwise falls back to an equal-length
call, so a third-party backend that only takes ``(q, k, v, seqlens)`` still gives the exact
result (at a cost, see :func:`call_attention`). Three backends live here and are registered by
the built-in plugin :mod:`atoken.plugins.attention`; all three take ``kv_seqlens``:

* :func:`attention_math`: the readable reference; it builds the block-diagonal mask of the
  whole batch (O(N²) memory), so use it for tests and small inputs only.
* :func:`attention_sdpa`: the CPU default. Samples of equal (query, key) lengths are stacked
  into one ``torch.nn.functional.scaled_dot_product_attention`` call each (no padding and no
  mask, so the result is exact); the mask of the whole batch is never built.
* :func:`attention_xformers`: xformers' memory-efficient kernel with a
  ``BlockDiagonalMask``. xformers is imported inside the function only, never on CPU paths.

:func:`default_attention_backend` names the backend to use on a device: ``"xformers"`` on CUDA
when it is installed and a probe call succeeds (its compiled kernels target specific torch
versions), else ``"sdpa"``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from atoken.core.errors import ConfigError

__all__ = [
    "AttentionFn",
    "KVAttentionFn",
    "accepts_kv_seqlens",
    "attention_math",
    "attention_sdpa",
    "attention_xformers",
    "block_diagonal_mask",
    "call_attention",
    "default_attention_backend",
    "xformers_available",
]

Lengths = torch.Tensor | Sequence[int]

#: The minimal backend: ``fn(q [N, H, D], k [N, H, D], v [N, H, D], seqlens int64 [B])
#: -> out [N, H, D]``. Every backend can be called this way.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class KVAttentionFn(Protocol):
    """A backend that also takes ``kv_seqlens``: ``fn(q [N, H, D], k [Nk, H, D],
    v [Nk, H, D], seqlens [B], *, kv_seqlens [B] | None = None) -> out [N, H, D]``."""

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        seqlens: Lengths,
        /,
        *,
        kv_seqlens: Lengths | None = None,
    ) -> torch.Tensor: ...


def _lengths(seqlens: Lengths) -> list[int]:
    if isinstance(seqlens, torch.Tensor):
        return [int(n) for n in seqlens.tolist()]
    return [int(n) for n in seqlens]


def _starts(lengths: list[int]) -> list[int]:
    """Row of the first token of every sample, plus the total: ``[B + 1]``."""
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    return starts


def _pair_lengths(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: Lengths, kv_seqlens: Lengths
) -> tuple[list[int], list[int]]:
    """Query and key lengths per sample, checked against each other and the tensors.

    Raises:
        ConfigError: lengths of different batch sizes, negative or not summing to the rows of
            q and k (or v), or a sample with queries but no keys.
    """
    q_lens, kv_lens = _lengths(seqlens), _lengths(kv_seqlens)
    if len(q_lens) != len(kv_lens):
        raise ConfigError(
            f"attention: seqlens has {len(q_lens)} samples but kv_seqlens has {len(kv_lens)}"
        )
    if any(n < 0 for n in q_lens) or any(n < 0 for n in kv_lens):
        raise ConfigError("attention: seqlens and kv_seqlens must be non-negative")
    if sum(q_lens) != q.shape[0]:
        raise ConfigError(f"attention: seqlens sum to {sum(q_lens)} but q has {q.shape[0]} rows")
    if sum(kv_lens) != k.shape[0] or v.shape[0] != k.shape[0]:
        raise ConfigError(
            f"attention: kv_seqlens sum to {sum(kv_lens)} but k and v have {k.shape[0]} and "
            f"{v.shape[0]} rows"
        )
    for b, (nq, nk) in enumerate(zip(q_lens, kv_lens, strict=True)):
        if nq and not nk:
            raise ConfigError(
                f"attention: sample {b} has {nq} queries and no keys (nothing to attend to)"
            )
    return q_lens, kv_lens


def _rows(starts: list[int], members: list[int], length: int) -> torch.Tensor:
    """int64 ``[len(members) * length]``: the rows of ``members``, each ``length`` long."""
    return torch.cat([torch.arange(starts[b], starts[b] + length) for b in members])


def block_diagonal_mask(
    seqlens: Lengths,
    kv_seqlens: Lengths | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """bool ``[N, Nk]``: ``mask[i, j]`` is True when query i and key j belong to the same
    sample (``[N, N]`` when ``kv_seqlens`` is None: the keys are packed like the queries)."""
    lengths = torch.as_tensor(_lengths(seqlens), dtype=torch.int64, device=device)  # [B]
    sample = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)  # [N]
    if kv_seqlens is None:
        return sample[:, None] == sample[None, :]  # [N, N]
    kv_lengths = torch.as_tensor(_lengths(kv_seqlens), dtype=torch.int64, device=device)  # [B]
    kv_sample = torch.repeat_interleave(
        torch.arange(len(kv_lengths), device=device), kv_lengths
    )  # [Nk]
    return sample[:, None] == kv_sample[None, :]  # [N, Nk]


def attention_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seqlens: Lengths,
    *,
    kv_seqlens: Lengths | None = None,
) -> torch.Tensor:
    """Reference attention: ``softmax(q k^T / sqrt(D) + mask) v`` with a block-diagonal mask.

    Builds the ``[H, N, Nk]`` logits of the whole batch. Without ``kv_seqlens`` every row has
    at least its own token; with it, a sample with queries but no keys is refused, so no row
    is ever fully masked.

    Raises:
        ConfigError: inconsistent ``kv_seqlens`` (see :func:`call_attention`).
    """
    if kv_seqlens is not None:
        _pair_lengths(q, k, v, seqlens, kv_seqlens)
    D = q.shape[-1]
    mask = block_diagonal_mask(seqlens, kv_seqlens, device=q.device)  # [N, Nk]
    qh, kh, vh = (t.transpose(0, 1) for t in (q, k, v))  # [H, N, D], [H, Nk, D], [H, Nk, D]
    logits = (qh.float() @ kh.float().transpose(1, 2)) / math.sqrt(D)  # [H, N, Nk]
    logits = logits.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(logits, dim=-1)  # [H, N, Nk]
    out = weights @ vh.float()  # [H, N, D]
    return out.transpose(0, 1).to(q.dtype)  # [N, H, D]


def attention_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seqlens: Lengths,
    *,
    kv_seqlens: Lengths | None = None,
) -> torch.Tensor:
    """Exact packed attention with one SDPA call per group of samples of equal lengths.

    Samples are grouped by (query length, key length). A group of ``g`` samples that lie back
    to back in the packed sequence is a free ``[g, L, H, D]`` view; other groups are gathered
    with one index. No padding, no mask.

    Raises:
        ConfigError: inconsistent ``kv_seqlens`` (see :func:`call_attention`).
    """
    q_lens = _lengths(seqlens)
    if kv_seqlens is None:
        kv_lens = q_lens
    else:
        q_lens, kv_lens = _pair_lengths(q, k, v, seqlens, kv_seqlens)
    N, H, D = q.shape
    pairs = list(zip(q_lens, kv_lens, strict=True))
    if pairs and len(set(pairs)) == 1:
        # Every sample has the same lengths: the packed sequences are [B, L, H, D] views.
        B, (L, Lk) = len(pairs), pairs[0]
        if L == 0:
            return q.new_zeros(N, H, D)
        qb = q.view(B, L, H, D).transpose(1, 2)  # [B, H, L, D]
        kb, vb = (t.view(B, Lk, H, D).transpose(1, 2) for t in (k, v))  # [B, H, Lk, D]
        out = F.scaled_dot_product_attention(qb, kb, vb)  # [B, H, L, D]
        return out.transpose(1, 2).reshape(N, H, D)
    out = q.new_empty(N, H, D)
    q_starts, kv_starts = _starts(q_lens), _starts(kv_lens)
    groups: dict[tuple[int, int], list[int]] = {}
    for b, (n, nk) in enumerate(pairs):
        if n:
            groups.setdefault((n, nk), []).append(b)
    for (L, Lk), members in groups.items():
        if len(members) == 1:
            s, sk = q_starts[members[0]], kv_starts[members[0]]
            qs = q[s : s + L].transpose(0, 1)[None]  # [1, H, L, D]
            ks, vs = (t[sk : sk + Lk].transpose(0, 1)[None] for t in (k, v))  # [1, H, Lk, D]
            out[s : s + L] = F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
            continue
        g = len(members)
        rows = _rows(q_starts, members, L).to(q.device)  # [g*L]
        kv_rows = _rows(kv_starts, members, Lk).to(q.device)  # [g*Lk]
        qg = q[rows].view(g, L, H, D).transpose(1, 2)  # [g, H, L, D]
        kg, vg = (t[kv_rows].view(g, Lk, H, D).transpose(1, 2) for t in (k, v))  # [g, H, Lk, D]
        og = F.scaled_dot_product_attention(qg, kg, vg)  # [g, H, L, D]
        out[rows] = og.transpose(1, 2).reshape(g * L, H, D)
    return out


def _xformers_bias(seqlens: Lengths, kv_seqlens: Lengths | None = None):  # -> BlockDiagonalMask
    """xformers' ``BlockDiagonalMask`` for ``seqlens`` (and ``kv_seqlens``); samples without
    queries are dropped (their keys must be dropped from k and v too)."""
    from xformers.ops import fmha

    if kv_seqlens is None:
        lengths = [n for n in _lengths(seqlens) if n]
        return fmha.attn_bias.BlockDiagonalMask.from_seqlens(lengths)
    pairs = [(n, nk) for n, nk in zip(_lengths(seqlens), _lengths(kv_seqlens), strict=True) if n]
    return fmha.attn_bias.BlockDiagonalMask.from_seqlens(
        [n for n, _ in pairs], [nk for _, nk in pairs]
    )


def attention_xformers(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seqlens: Lengths,
    *,
    kv_seqlens: Lengths | None = None,
) -> torch.Tensor:
    """Packed attention with xformers' memory-efficient kernel and a ``BlockDiagonalMask``.

    Runs where xformers' compiled kernels load (CUDA builds matching the installed torch);
    :func:`default_attention_backend` checks that with a probe call.

    Raises:
        ConfigError: inconsistent ``kv_seqlens`` (see :func:`call_attention`).
    """
    from xformers.ops import memory_efficient_attention

    N, H, D = q.shape
    if kv_seqlens is not None:
        q_lens, kv_lens = _pair_lengths(q, k, v, seqlens, kv_seqlens)
        if N == 0:
            return q.new_zeros(N, H, D)
        kept = [b for b, n in enumerate(q_lens) if n]
        if any(kv_lens[b] for b, n in enumerate(q_lens) if not n):
            # Keys of samples without queries are not in the mask: leave them out of k and v.
            starts = _starts(kv_lens)
            rows = torch.cat([torch.arange(starts[b], starts[b + 1]) for b in kept])  # [Nk']
            k, v = k[rows.to(k.device)], v[rows.to(v.device)]  # [Nk', H, D]
        bias = _xformers_bias([q_lens[b] for b in kept], [kv_lens[b] for b in kept])
    else:
        if N == 0:
            return q.new_zeros(N, H, D)
        bias = _xformers_bias(seqlens)
    out = memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias)  # [1, N, H, D]
    return out[0]


# ------------------------------------------------------------------------ calling a backend
_KV_SUPPORT: weakref.WeakKeyDictionary[Callable, bool] = weakref.WeakKeyDictionary()


def _names_kv_seqlens(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no introspectable signature: assume the minimal one
        return False
    param = params.get("kv_seqlens")
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return param is not None and param.kind in kinds


def accepts_kv_seqlens(fn: Callable) -> bool:
    """Whether the backend ``fn`` names a ``kv_seqlens`` parameter (``**kwargs`` does not
    count: it may drop the argument). Inspected once per function; the answer is cached."""
    try:
        return _KV_SUPPORT[fn]
    except (KeyError, TypeError):  # not seen yet, or not weak-referenceable
        pass
    answer = _names_kv_seqlens(fn)
    with contextlib.suppress(TypeError):  # no weak references: inspected on every call
        _KV_SUPPORT[fn] = answer
    return answer


def _equal_length_call(
    fn: AttentionFn,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seqlens: Lengths,
    kv_seqlens: Lengths,
) -> torch.Tensor:
    """``kv_seqlens`` attention through a backend that only takes ``(q, k, v, seqlens)``."""
    q_lens, kv_lens = _pair_lengths(q, k, v, seqlens, kv_seqlens)
    N, H, D = q.shape
    q_starts, kv_starts = _starts(q_lens), _starts(kv_lens)
    q_index, kv_index, real, lens = [], [], [], []
    pos = 0  # rows of the padded sequence so far
    for b, (n, nk) in enumerate(zip(q_lens, kv_lens, strict=True)):
        if not n:
            continue  # no queries: nothing to compute, its keys are left out
        for first in range(0, n, nk):  # one segment when n <= nk
            m = min(nk, n - first)  # real queries of this segment
            q_index += [torch.full((nk - m,), N), torch.arange(m) + q_starts[b] + first]
            kv_index.append(torch.arange(kv_starts[b], kv_starts[b] + nk))
            real.append(torch.arange(pos + nk - m, pos + nk))
            lens.append(nk)
            pos += nk
    if not lens:
        return q.new_zeros(N, H, D)
    device = seqlens.device if isinstance(seqlens, torch.Tensor) else torch.device("cpu")
    q_rows = torch.cat(q_index).to(q.device)  # [P]; row N is the zero query
    kv_rows = torch.cat(kv_index).to(k.device)  # [P]
    q_padded = torch.cat([q, q.new_zeros(1, H, D)])[q_rows]  # [P, H, D]
    out = fn(q_padded, k[kv_rows], v[kv_rows], torch.tensor(lens, device=device))  # [P, H, D]
    return out[torch.cat(real).to(out.device)]  # [N, H, D]


def call_attention(
    fn: AttentionFn | KVAttentionFn,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seqlens: Lengths,
    kv_seqlens: Lengths | None = None,
) -> torch.Tensor:
    """Run the backend ``fn``: queries ``q [N, H, D]`` packed by ``seqlens [B]`` against keys
    and values ``k, v [Nk, H, D]`` packed by ``kv_seqlens [B]`` (None: packed like q).

    A backend whose signature names ``kv_seqlens`` gets it as a keyword. Any other backend
    (the minimal ``(q, k, v, seqlens)`` form) gets an equal-length problem with the same
    answer: each sample's queries are cut into segments of at most ``nk`` rows (one segment
    when ``n <= nk``, as in the decoder cache) and every segment is preceded by zero query rows
    up to ``nk`` and paired with that sample's ``nk`` keys; only the real query rows are kept.
    The cost: the backend computes about ``sum(ceil(n / nk) * nk**2)`` logits instead of
    ``sum(n * nk)`` (``(M + n) / n`` times more for a tile of n tokens after M cached ones),
    plus gathers of the padded q, k and v.

    Raises:
        ConfigError: inconsistent lengths, or a sample with queries but no keys.
    """
    if kv_seqlens is None:
        return fn(q, k, v, seqlens)
    if accepts_kv_seqlens(fn):
        return fn(q, k, v, seqlens, kv_seqlens=kv_seqlens)
    return _equal_length_call(fn, q, k, v, seqlens, kv_seqlens)


# ------------------------------------------------------------------------ choosing a backend
def xformers_available() -> bool:
    """True when the xformers package is installed (it may still fail to run)."""
    return importlib.util.find_spec("xformers") is not None


@functools.lru_cache(maxsize=8)
def _xformers_probe(device: str) -> bool:
    """Tiny xformers calls on ``device`` (packed and with ``kv_seqlens``) compared with the
    reference; False on any error."""
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(5, 2, 8, generator=g).to(device, torch.float16) for _ in range(3))
        out = attention_xformers(q, k, v, [2, 3])
        ref = attention_math(q.float(), k.float(), v.float(), [2, 3])
        kv_out = attention_xformers(q[:3], k, v, [1, 2], kv_seqlens=[2, 3])
        kv_ref = attention_math(q[:3].float(), k.float(), v.float(), [1, 2], kv_seqlens=[2, 3])
        return bool(
            torch.allclose(out.float(), ref, atol=1e-2)
            and torch.allclose(kv_out.float(), kv_ref, atol=1e-2)
        )
    except Exception:  # a missing or mismatched kernel shows up as any exception
        return False


def default_attention_backend(device: torch.device | str | None = None) -> str:
    """The backend name to use on ``device``: ``"xformers"`` on CUDA when installed and a
    probe call succeeds, else ``"sdpa"``."""
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and xformers_available() and torch.cuda.is_available():
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if _xformers_probe(str(dev)):
            return "xformers"
    return "sdpa"
