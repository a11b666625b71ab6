"""Attention over packed samples: each sample attends only to its own tokens.

Shapes:
    B  samples
    N  tokens of all samples packed back to back, N = sum(seqlens)
    H  heads
    D  head dimension
    q, k, v, out: [N, H, D]; seqlens: int64 [B] (zero-length samples allowed)

An attention backend is a function ``fn(q, k, v, seqlens) -> out`` computing, for every sample
``b`` with rows ``s:e``, ``softmax(q[s:e] k[s:e]^T / sqrt(D)) v[s:e]`` per head. Three live here
and are registered by the built-in plugin :mod:`atoken.plugins.attention`:

* :func:`attention_math`: the readable reference; it builds the block-diagonal mask of the
  whole batch (O(N²) memory), so use it for tests and small inputs only.
* :func:`attention_sdpa`: the CPU default. Samples of equal length are stacked into one
  ``torch.nn.functional.scaled_dot_product_attention`` call each (no padding and no mask, so
  the result is exact); the mask of the whole batch is never built.
* :func:`attention_xformers`: xformers' memory-efficient kernel with a
  ``BlockDiagonalMask``. xformers is imported inside the function only, never on CPU paths.

:func:`default_attention_backend` names the backend to use on a device: ``"xformers"`` on CUDA
when it is installed and a probe call succeeds (its compiled kernels target specific torch
versions), else ``"sdpa"``.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "AttentionFn",
    "attention_math",
    "attention_sdpa",
    "attention_xformers",
    "block_diagonal_mask",
    "default_attention_backend",
    "xformers_available",
]

#: ``fn(q [N, H, D], k [N, H, D], v [N, H, D], seqlens int64 [B]) -> out [N, H, D]``.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _lengths(seqlens: torch.Tensor | Sequence[int]) -> list[int]:
    if isinstance(seqlens, torch.Tensor):
        return [int(n) for n in seqlens.tolist()]
    return [int(n) for n in seqlens]


def block_diagonal_mask(
    seqlens: torch.Tensor | Sequence[int], *, device: torch.device | str | None = None
) -> torch.Tensor:
    """bool ``[N, N]``: ``mask[i, j]`` is True when tokens i and j belong to the same sample."""
    lengths = torch.as_tensor(_lengths(seqlens), dtype=torch.int64, device=device)  # [B]
    sample = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)  # [N]
    return sample[:, None] == sample[None, :]  # [N, N]


def attention_math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: torch.Tensor | Sequence[int]
) -> torch.Tensor:
    """Reference attention: ``softmax(q k^T / sqrt(D) + mask) v`` with a block-diagonal mask.

    Builds the ``[H, N, N]`` logits of the whole batch; every row has at least its own token,
    so no row is fully masked.
    """
    D = q.shape[-1]
    mask = block_diagonal_mask(seqlens, device=q.device)  # [N, N]
    qh, kh, vh = (t.transpose(0, 1) for t in (q, k, v))  # [H, N, D] each
    logits = (qh.float() @ kh.float().transpose(1, 2)) / math.sqrt(D)  # [H, N, N]
    logits = logits.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(logits, dim=-1)  # [H, N, N]
    out = weights @ vh.float()  # [H, N, D]
    return out.transpose(0, 1).to(q.dtype)  # [N, H, D]


def attention_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: torch.Tensor | Sequence[int]
) -> torch.Tensor:
    """Exact packed attention with one SDPA call per group of equal-length samples.

    A group of ``g`` samples of length ``L`` that lie back to back in the packed sequence is a
    free ``[g, L, H, D]`` view; other groups are gathered with one index. No padding, no mask.
    """
    lengths = _lengths(seqlens)
    N, H, D = q.shape
    if lengths and len(set(lengths)) == 1:
        # Every sample has the same length: the packed sequence is a [B, L, H, D] view.
        B, L = len(lengths), lengths[0]
        if L == 0:
            return q.new_zeros(N, H, D)
        qb, kb, vb = (t.view(B, L, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
        out = F.scaled_dot_product_attention(qb, kb, vb)  # [B, H, L, D]
        return out.transpose(1, 2).reshape(N, H, D)
    out = q.new_empty(N, H, D)
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    groups: dict[int, list[int]] = {}
    for b, n in enumerate(lengths):
        if n:
            groups.setdefault(n, []).append(b)
    for L, members in groups.items():
        if len(members) == 1:
            s = starts[members[0]]
            qs, ks, vs = (t[s : s + L].transpose(0, 1)[None] for t in (q, k, v))  # [1, H, L, D]
            out[s : s + L] = F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
            continue
        rows = torch.cat([torch.arange(starts[b], starts[b] + L) for b in members])  # [g*L]
        rows = rows.to(q.device)
        g = len(members)
        qg, kg, vg = (t[rows].view(g, L, H, D).transpose(1, 2) for t in (q, k, v))  # [g, H, L, D]
        og = F.scaled_dot_product_attention(qg, kg, vg)  # [g, H, L, D]
        out[rows] = og.transpose(1, 2).reshape(g * L, H, D)
    return out


def _xformers_bias(seqlens: torch.Tensor | Sequence[int]):  # -> BlockDiagonalMask
    """xformers' ``BlockDiagonalMask`` for ``seqlens`` (zero-length samples dropped)."""
    from xformers.ops import fmha

    lengths = [n for n in _lengths(seqlens) if n]
    return fmha.attn_bias.BlockDiagonalMask.from_seqlens(lengths)


def attention_xformers(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: torch.Tensor | Sequence[int]
) -> torch.Tensor:
    """Packed attention with xformers' memory-efficient kernel and a ``BlockDiagonalMask``.

    Runs where xformers' compiled kernels load (CUDA builds matching the installed torch);
    :func:`default_attention_backend` checks that with a probe call.
    """
    from xformers.ops import memory_efficient_attention

    N, H, D = q.shape
    if N == 0:
        return q.new_zeros(N, H, D)
    bias = _xformers_bias(seqlens)
    out = memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias)  # [1, N, H, D]
    return out[0]


def xformers_available() -> bool:
    """True when the xformers package is installed (it may still fail to run)."""
    return importlib.util.find_spec("xformers") is not None


@functools.lru_cache(maxsize=8)
def _xformers_probe(device: str) -> bool:
    """One tiny xformers call on ``device`` compared with the reference; False on any error."""
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(5, 2, 8, generator=g).to(device, torch.float16) for _ in range(3))
        out = attention_xformers(q, k, v, [2, 3])
        ref = attention_math(q.float(), k.float(), v.float(), [2, 3])
        return bool(torch.allclose(out.float(), ref, atol=1e-2))
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
