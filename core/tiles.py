"""Time tiles of the tokenizer: long samples encoded and decoded tile by tile.

Shapes:
    S  latent time steps per tile; n tokens of one sample, n_k of its tile k, C width
    a tile holds the tokens with t in [k * S, (k + 1) * S), re-based to start at t = 0

Encode: each tile alone through the encoder (as the official code does), either from the
modality's ``split_time`` pieces (:func:`encode_pieces`: the sample is never patchified whole)
or from the rows of an already patchified sample (:func:`encode_long`). Decode: tile by tile
with the decoder's KV cache, into the sample's token order (:func:`decode_tokens_tiled`) or,
for a sample encoded from pieces, joined piece by piece by its modality
(:func:`decode_with_pieces`). Every function takes the model (an
:class:`~atoken.core.model.ATokenModel`) and uses only its public pieces, the same ones a
training step uses (``prepare``, ``embed_values``, ``encode_tokens``, ``encoder``, ``decoder``,
``samples_from_tokens``); the entry points are ``ATokenModel.encode``, ``decode``,
``decode_tile`` and ``kv_cache``.
"""

from __future__ import annotations

from typing import Any

import torch

from atoken.core.batch import PackedBatch
from atoken.core.coords import time_window
from atoken.core.errors import ConfigError, LatentValidationError
from atoken.core.kv_cache import KVCache, decode_with_cache
from atoken.core.latent import SparseLatent
from atoken.core.sample_inputs import ModalityArg, sample_list, sample_names

__all__ = [
    "check_steps",
    "decode_samples",
    "decode_tokens_tiled",
    "decode_with_pieces",
    "encode_long",
    "encode_pieces",
    "encode_prepared",
    "encode_samples",
    "join_pieces",
    "tile_steps",
    "time_extent",
]


def time_extent(coords: torch.Tensor) -> int:
    """Latent time steps a sample's coords ``[n, 4]`` span (t from 0)."""
    return int(coords[:, 0].max()) + 1 if coords.shape[0] else 0


def encode_long(model: Any, name: str, sample: SparseLatent, S: int) -> torch.Tensor:
    """One sample longer than a tile: each tile of ``S`` steps encoded alone with its time
    re-based to 0 (as the official code does); tokens ``[n, C]`` in the sample's order."""
    coords = sample.coords  # [n, 4]
    out = None
    pos = [model.modality(name).uses_pos_table]
    for start in range(0, time_extent(coords), S):
        rows, local = time_window(coords, start, S)  # [n_k], [n_k, 4] re-based to the tile
        if rows.numel() == 0:
            continue
        x = model.embed_values(name, sample.feats[rows])  # [n_k, C]
        seqlens = torch.tensor([rows.numel()], dtype=torch.int64)
        tokens = model.encoder.forward_tokens(x, local, seqlens, pos_samples=pos)  # [n_k, C]
        if out is None:
            out = tokens.new_zeros(coords.shape[0], tokens.shape[1])  # [n, C]
        out[rows] = tokens
    if out is None:
        out = model.embed_values(name, sample.feats)[:0].new_zeros(0, model.encoder.width)
    return out


def encode_pieces(model: Any, name: str, pieces: list[Any], S: int) -> SparseLatent:
    """A long sample from its modality's ``split_time`` pieces: each patchified (and checked,
    ``model.boundary``), normalised and encoded alone (time re-based to 0), so memory is
    bounded by one piece."""
    mod = model.modality(name)
    device = model.device
    feats, coords, metas = [], [], []
    pos = [mod.uses_pos_table]
    for k, piece in enumerate(pieces):
        packed = model.boundary.pack(mod, [piece])  # patchify, checked at the boundary
        values, local, meta = packed.feats, packed.coords, packed.meta[0]  # [n_k, d], [n_k, 4]
        values, local = values.to(device), local.to(device)
        x = model.embed_values(name, mod.normalize(values))  # [n_k, C]
        seqlens = torch.tensor([values.shape[0]], dtype=torch.int64)
        feats.append(model.encoder.forward_tokens(x, local, seqlens, pos_samples=pos))
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
    model: Any, latent: SparseLatent, pieces: set[int], cache_steps: int
) -> list[Any]:
    """Samples encoded piece by piece (their meta lists the ``tiles``) are decoded tile by
    tile with the KV cache and joined by their modality; the others as usual."""
    rest = [b for b in range(latent.batch_size) if b not in pieces]
    out: dict[int, Any] = {}
    if rest:
        out.update(
            zip(rest, model.decode(latent.select(rest), kv_cache_steps=cache_steps), strict=True)
        )
    parts = latent.unpack()
    for b in sorted(pieces):
        out[b] = join_pieces(model, parts[b], cache_steps)
    return [out[b] for b in range(latent.batch_size)]


def join_pieces(model: Any, part: SparseLatent, cache_steps: int) -> Any:
    """One sample encoded piece by piece, decoded tile by tile and joined by its modality."""
    meta = part.meta[0]
    name, S = part.modality[0], int(meta["tile_steps"])
    cache = KVCache(cache_steps)

    def tiles():
        for k, tile_meta in enumerate(meta["tiles"]):
            rows, local = time_window(part.coords, k * S, S)  # [n_k], [n_k, 4]
            tile = SparseLatent(
                part.feats[rows],
                local,
                [rows.numel()],
                modality=name,
                meta=[tile_meta],
                validate=False,
            )
            yield model.decode_tile(tile, cache, steps=S)[0]

    return model.modality(name).join_time(tiles(), meta)


def decode_tokens_tiled(
    model: Any, latent: SparseLatent, long: dict[int, int], cache_steps: int
) -> torch.Tensor:
    """Decoder tokens ``[N, C]``: short samples in one pass, long ones tile by tile."""
    _, decoder, _ = model.require_decoder()
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
        tokens = part.feats.new_zeros(part.num_tokens, decoder.width)  # [n, C]
        cache = KVCache(cache_steps)
        for start in range(0, time_extent(part.coords), S):
            rows, local = time_window(part.coords, start, S)  # [n_k], [n_k, 4]
            tile = decode_with_cache(decoder, part.feats[rows], local, cache, steps=S)
            tokens[rows] = tile.to(tokens.dtype)  # [n_k, C]
        out[b] = tokens
    return torch.cat([out[b] for b in range(B)])


def tile_steps(model: Any, meta: dict[str, Any] | None = None) -> int | None:
    """The tile length of a sample: its meta's ``tile_steps`` (0: untiled), else the
    config's; None: no tiling."""
    steps = (meta or {}).get("tile_steps", model.config.tile_steps)
    if steps is None or steps == 0:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise LatentValidationError("meta", f"tile_steps must be an int >= 0, got {steps!r}")
    return steps


def encode_prepared(
    model: Any, batch: PackedBatch, S: int | None, override: int | None = None
) -> SparseLatent:
    """Encoder tokens of a packed batch, samples longer than ``S`` steps tiled in time:
    feats ``[N, C]``. A per-call ``override`` of the tile length is recorded in every
    sample's meta (``tile_steps``, 0: untiled), so decode uses the same tiles."""
    device = model.device
    B = batch.batch_size
    if B == 0:
        return SparseLatent(
            torch.zeros(0, model.encoder.width, device=device),
            torch.zeros(0, 4, dtype=torch.int32, device=device),
            torch.zeros(0, dtype=torch.int64),
            modality=(),
            meta=(),
        )
    metas = [dict(m) for m in batch.meta]
    long: dict[int, int] = {}
    per_sample = torch.split(batch.coords, batch.seqlens.tolist())
    for b, coords in enumerate(per_sample):
        if S is not None and time_extent(coords) > S:
            long[b] = S
            metas[b]["tile_steps"] = S
        elif override is not None:
            metas[b]["tile_steps"] = S or 0
    if not long:
        feats = model.encode_tokens(batch)  # [N, C]
    else:
        short = [b for b in range(B) if b not in long]
        parts: dict[int, torch.Tensor] = {}
        if short:
            sub = batch.select(short)
            chunks = torch.split(model.encode_tokens(sub), sub.seqlens.tolist())
            parts.update(zip(short, chunks, strict=True))
        for b, S in long.items():
            group, sample = batch.sample(b)
            parts[b] = encode_long(model, group.name, sample, S)
        feats = torch.cat([parts[b] for b in range(B)])  # [N, C]
    return SparseLatent(
        feats,
        batch.coords.to(feats.device),
        batch.seqlens,
        modality=batch.modality,
        meta=metas,
        validate=False,
    )


def encode_samples(
    model: Any, samples: Any, modality: ModalityArg, override: int | None
) -> SparseLatent:
    """Encoder tokens of raw samples (or a latent of raw values), with tiles of ``override``
    steps (0: none) or the config's: a sample whose modality splits it into more than one
    piece is encoded piece by piece (:func:`encode_pieces`), the others in one packed pass
    (:func:`encode_prepared`)."""
    S = tile_steps(model) if override is None else check_steps(override)
    if isinstance(samples, SparseLatent) or S is None:
        return encode_prepared(model, model.prepare(samples, modality), S, override)
    default = model.default_modality()
    samples = sample_list(samples, modality, default, model.modality)
    names = sample_names(modality, len(samples), default)
    split: dict[int, list[Any]] = {}
    for b, (sample, name) in enumerate(zip(samples, names, strict=True)):
        pieces = model.modality(name).split_time(sample, S)
        if pieces is not None and len(pieces) > 1:
            split[b] = pieces
        elif pieces:
            samples[b] = pieces[0]  # already converted (a file is not read twice)
    if not split:
        return encode_prepared(model, model.prepare(samples, names), S, override)
    rest = [b for b in range(len(samples)) if b not in split]
    parts: dict[int, SparseLatent] = {}
    if rest:
        batch = model.prepare([samples[b] for b in rest], [names[b] for b in rest])
        parts.update(zip(rest, encode_prepared(model, batch, S, override).unpack(), strict=True))
    for b, pieces in split.items():
        parts[b] = encode_pieces(model, names[b], pieces, S)
    return SparseLatent.pack(parts[b] for b in range(len(samples)))


def check_steps(steps: Any) -> int | None:
    """A per-call tile length: a positive int, or 0 for no tiling (None)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"tile_steps must be an int >= 0 (0: no tiling), got {steps!r}")
    return steps or None


def decode_samples(model: Any, latent: SparseLatent, cache_steps: int) -> list[Any]:
    """A latent on the decoder's device and dtype back to samples: short samples in one
    decoder pass, long ones tile by tile with a KV cache of ``cache_steps`` steps, samples
    encoded piece by piece joined piece by piece by their modality."""
    _, decoder, _ = model.require_decoder()
    per_sample = torch.split(latent.coords, latent.seqlens.tolist())  # [n_b, 4] each
    long = {}
    for b, coords in enumerate(per_sample):
        S = tile_steps(model, latent.meta[b])
        if S is not None and time_extent(coords) > S:
            long[b] = S
    pieces = {b for b in long if "tiles" in latent.meta[b]}
    if pieces:
        return decode_with_pieces(model, latent, pieces, cache_steps)
    if not long:
        tokens = decoder(latent.feats, latent.coords, latent.seqlens)  # [N, C']
    else:
        tokens = decode_tokens_tiled(model, latent, long, cache_steps)  # [N, C']
    return model.samples_from_tokens(tokens, latent)
