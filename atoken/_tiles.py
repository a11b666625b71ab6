"""Time tiles of the tokenizer: long samples encoded and decoded tile by tile.

Shapes:
    S  latent time steps per tile; n tokens of one sample, n_k of its tile k, C width
    a tile holds the tokens with t in [k * S, (k + 1) * S), re-based to start at t = 0

Encode: each tile alone through the encoder (as the official code does), either from the
modality's ``split_time`` pieces (:func:`encode_pieces`: the sample is never patchified whole)
or from the rows of an already patchified sample (:func:`encode_long`). Decode: tile by tile
with the decoder's KV cache, into the sample's token order (:func:`decode_tokens_tiled`) or,
for a sample encoded from pieces, joined piece by piece by its modality
(:func:`decode_with_pieces`). These are the tokenizer's internals; the public entry points are
``Tokenizer.encode``, ``decode``, ``decode_tile`` and ``kv_cache``.
"""

from __future__ import annotations

from typing import Any

import torch

from atoken.core.kv_cache import KVCache, decode_with_cache
from atoken.core.latent import SparseLatent

__all__ = [
    "decode_tokens_tiled",
    "decode_with_pieces",
    "encode_long",
    "encode_pieces",
    "join_pieces",
    "time_extent",
]


def time_extent(coords: torch.Tensor) -> int:
    return int(coords[:, 0].max()) + 1 if coords.shape[0] else 0


def encode_long(tok: Any, name: str, sample: SparseLatent, S: int) -> torch.Tensor:
    """One sample longer than a tile: each tile of ``S`` steps encoded alone with its time
    re-based to 0 (as the official code does); tokens ``[n, C]`` in the sample's order."""
    coords = sample.coords  # [n, 4]
    t = coords[:, 0]
    out = None
    pos = [tok.modality(name).uses_pos_table]
    for start in range(0, time_extent(coords), S):
        rows = torch.nonzero((t >= start) & (t < start + S)).flatten()  # [n_k]
        if rows.numel() == 0:
            continue
        local = coords[rows].clone()
        local[:, 0] -= start  # [n_k, 4] re-based to the tile
        x = tok._embed_values(name, sample.feats[rows])  # [n_k, C]
        seqlens = torch.tensor([rows.numel()], dtype=torch.int64)
        tokens = tok.encoder.forward_tokens(x, local, seqlens, pos_samples=pos)  # [n_k, C]
        if out is None:
            out = tokens.new_zeros(coords.shape[0], tokens.shape[1])  # [n, C]
        out[rows] = tokens
    if out is None:
        out = tok._embed_values(name, sample.feats)[:0].new_zeros(0, tok.encoder.width)
    return out


def encode_pieces(tok: Any, name: str, pieces: list[Any], S: int) -> SparseLatent:
    """A long sample from its modality's ``split_time`` pieces: each patchified, normalised
    and encoded alone (time re-based to 0), so memory is bounded by one piece."""
    mod = tok.modality(name)
    device = tok._device()
    feats, coords, metas = [], [], []
    pos = [mod.uses_pos_table]
    for k, piece in enumerate(pieces):
        values, local, meta = mod.patchify(piece)  # [n_k, d], [n_k, 4]
        values, local = values.to(device), local.to(device)
        x = tok._embed_values(name, mod.normalize(values))  # [n_k, C]
        seqlens = torch.tensor([values.shape[0]], dtype=torch.int64)
        feats.append(tok.encoder.forward_tokens(x, local, seqlens, pos_samples=pos))
        shifted = local.clone()
        shifted[:, 0] += k * S  # back to the sample's time
        coords.append(shifted)
        metas.append(meta)
    meta = {**mod.join_meta(metas), "tile_steps": S, "tiles": metas}
    all_feats = torch.cat(feats)  # [n, C]
    seqlens = torch.tensor([all_feats.shape[0]], dtype=torch.int64)
    return SparseLatent(
        all_feats, torch.cat(coords), seqlens, modality=name, meta=[meta], validate=False
    )


def decode_with_pieces(
    tok: Any, latent: SparseLatent, pieces: set[int], cache_steps: int
) -> list[Any]:
    """Samples encoded piece by piece (their meta lists the ``tiles``) are decoded tile by
    tile with the KV cache and joined by their modality; the others as usual."""
    rest = [b for b in range(latent.batch_size) if b not in pieces]
    out: dict[int, Any] = {}
    if rest:
        out.update(
            zip(rest, tok.decode(latent.select(rest), kv_cache_steps=cache_steps), strict=True)
        )
    parts = latent.unpack()
    for b in sorted(pieces):
        out[b] = join_pieces(tok, parts[b], cache_steps)
    return [out[b] for b in range(latent.batch_size)]


def join_pieces(tok: Any, part: SparseLatent, cache_steps: int) -> Any:
    meta = part.meta[0]
    name, S = part.modality[0], int(meta["tile_steps"])
    t = part.coords[:, 0]
    cache = KVCache(cache_steps)

    def tiles():
        for k, tile_meta in enumerate(meta["tiles"]):
            rows = torch.nonzero((t >= k * S) & (t < (k + 1) * S)).flatten()  # [n_k]
            local = part.coords[rows].clone()
            local[:, 0] -= k * S  # re-based to the tile
            tile = SparseLatent(
                part.feats[rows],
                local,
                [rows.numel()],
                modality=name,
                meta=[tile_meta],
                validate=False,
            )
            yield tok.decode_tile(tile, cache, steps=S)[0]

    return tok.modality(name).join_time(tiles(), meta)


def decode_tokens_tiled(
    tok: Any, latent: SparseLatent, long: dict[int, int], cache_steps: int
) -> torch.Tensor:
    """Decoder tokens ``[N, C]``: short samples in one pass, long ones tile by tile."""
    _, decoder, _ = tok._require_decoder()
    B = latent.batch_size
    parts = latent.unpack()
    out: dict[int, torch.Tensor] = {}
    short = [b for b in range(B) if b not in long]
    if short:
        sub = latent.select(short)
        chunks = torch.split(decoder(sub.feats, sub.coords, sub.seqlens), sub.seqlens.tolist())
        out.update(zip(short, chunks, strict=True))
    for b, S in long.items():
        part = parts[b]
        t = part.coords[:, 0]
        tokens = part.feats.new_zeros(part.num_tokens, decoder.width)  # [n, C]
        cache = KVCache(cache_steps)
        for start in range(0, time_extent(part.coords), S):
            rows = torch.nonzero((t >= start) & (t < start + S)).flatten()  # [n_k]
            local = part.coords[rows].clone()
            local[:, 0] -= start  # re-based to the tile
            tile = decode_with_cache(decoder, part.feats[rows], local, cache, steps=S)
            tokens[rows] = tile.to(tokens.dtype)  # [n_k, C]
        out[b] = tokens
    return torch.cat([out[b] for b in range(B)])
