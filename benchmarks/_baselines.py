"""The exact but wasteful schemes the packed backbone is measured against (benchmarks only).

Shapes: packed values [N, P], coords [N, 4], seqlens [B]; attention q, k, v [N, H, D].
A padded batch pads every sample to the longest L: [B, L, ...] with a key mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import atoken
from atoken.core.encoder import Encoder


def padded_inputs(values, coords, seqlens):
    """Pad every sample to the longest: values [B*L, P], coords [B*L, 4], valid lengths."""
    lengths = seqlens.tolist()
    L, P = max(lengths), values.shape[1]
    vals = values.new_zeros(len(lengths), L, P)  # [B, L, P]
    crds = coords.new_zeros(len(lengths), L, 4)  # [B, L, 4]; pads sit at (0, 0, 0, 0)
    start = 0
    for b, n in enumerate(lengths):
        vals[b, :n] = values[start : start + n]
        crds[b, :n] = coords[start : start + n]
        start += n
    return vals.reshape(-1, P), crds.reshape(-1, 4), lengths, L


def masked_padded_attention(lengths: list[int], L: int):
    """SDPA over [B, H, L, D] with a key mask: the padded-batch baseline."""
    valid = torch.tensor(lengths)
    mask = (torch.arange(L)[None] < valid[:, None])[:, None, None, :]  # [B, 1, 1, L]

    def fn(q, k, v, seqlens):
        N, H, D = q.shape
        B = N // L
        qb, kb, vb = (t.reshape(B, L, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
        out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)  # [B, H, L, D]
        return out.transpose(1, 2).reshape(N, H, D)

    return fn


def run_padded(enc: Encoder, values, coords, seqlens):
    """Encode the padded batch; return the real tokens [N, C] (pads dropped) and embeddings."""
    pv, pc, lengths, L = padded_inputs(values, coords, seqlens)
    enc.set_attention_fn(masked_padded_attention(lengths, L))
    try:
        tokens = enc(pv, pc, torch.full((len(lengths),), L, dtype=torch.int64))  # [B*L, C]
    finally:
        enc.set_attention_fn(atoken.get_registry().attention_backends.create("sdpa"))
    keep = torch.cat([torch.arange(b * L, b * L + n) for b, n in enumerate(lengths)])
    real = tokens[keep]  # [N, C]
    return real, enc.pool(real, seqlens)


def per_sample_sdpa(q, k, v, lengths):
    """The other exact candidate: one SDPA call per sample."""
    out, start = q.new_empty(q.shape), 0
    for n in lengths:
        if n:
            qs, ks, vs = (t[start : start + n].transpose(0, 1)[None] for t in (q, k, v))
            out[start : start + n] = F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
        start += n
    return out


def padded_sdpa(q, k, v, lengths):
    """Pad to the longest sample, one SDPA call with a key mask (exact, wasteful)."""
    L, (_, H, D) = max(lengths), q.shape
    pads = [t.new_zeros(len(lengths), L, H, D) for t in (q, k, v)]  # [B, L, H, D] each
    start = 0
    for b, n in enumerate(lengths):
        for pad, t in zip(pads, (q, k, v), strict=True):
            pad[b, :n] = t[start : start + n]
        start += n
    mask = (torch.arange(L)[None] < torch.tensor(lengths)[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(*(p.transpose(1, 2) for p in pads), attn_mask=mask)
    out = out.transpose(1, 2)  # [B, L, H, D]
    return torch.cat([out[b, :n] for b, n in enumerate(lengths)])
