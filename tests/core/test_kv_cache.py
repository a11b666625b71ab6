"""The decoder KV cache: what it stores, against the plain decoder as an oracle; that it runs
through the registered attention backend; and that time advances by the tile's step count
(sparse and empty tiles) against a streaming reference built from explicit q, k, v with
absolute times and ``attention_math``."""

from __future__ import annotations

import pytest
import torch

from atoken.core.attention import attention_math, attention_sdpa
from atoken.core.coords import raster_coords
from atoken.core.decoder import Decoder
from atoken.core.errors import ConfigError
from atoken.core.kv_cache import KVCache, decode_with_cache
from atoken.tokenizer import Tokenizer

LATENT = 8


def _decoder(depth: int = 2, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    tok = Tokenizer.from_preset("tiny", decoder_depth=depth, latent_dim=LATENT)
    return tok.decoder.eval()


def _tile(steps: int = 2, gh: int = 2, gw: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coords = raster_coords((steps, gh, gw))  # [n, 4] = (t, x, y, 0)
    return torch.randn(coords.shape[0], LATENT, generator=g), coords


@torch.no_grad()
def test_without_a_cache_it_is_the_plain_decoder():
    dec = _decoder()
    latent, coords = _tile()
    n = torch.tensor([latent.shape[0]])
    ref = dec(latent, coords, n)
    assert torch.allclose(decode_with_cache(dec, latent, coords, None), ref, atol=1e-5)
    assert torch.allclose(decode_with_cache(dec, latent, coords, KVCache(0)), ref, atol=1e-5)


@torch.no_grad()
def test_cache_off_gives_independent_tiles():
    dec = _decoder()
    first, coords = _tile(seed=1)
    second, _ = _tile(seed=2)
    cache = KVCache(0)
    decode_with_cache(dec, first, coords, cache)
    assert cache.nbytes == 0 and cache.held_steps == 0
    alone = decode_with_cache(dec, second, coords, None)
    assert torch.equal(decode_with_cache(dec, second, coords, cache), alone)


@pytest.mark.parametrize("steps", [1, 2])
@torch.no_grad()
def test_one_layer_with_cache_equals_attending_to_the_previous_steps(steps):
    """Oracle: with one layer, the cached K/V of the previous tile's last ``steps`` steps are
    exactly the K/V a plain decoder computes for those tokens when they precede the tile, so
    the tile's outputs must equal the plain decoder's on [last steps of tile 1; tile 2]."""
    dec = _decoder(depth=1)
    S = 2
    first, coords = _tile(steps=S, seed=3)
    second, _ = _tile(steps=S, seed=4)
    per_step = coords.shape[0] // S
    cache = KVCache(steps)
    decode_with_cache(dec, first, coords, cache)
    assert cache.held_steps == steps
    got = decode_with_cache(dec, second, coords, cache)  # [n, C]

    tail = first[(S - steps) * per_step :]  # the last `steps` steps of tile 1
    tail_coords = coords[(S - steps) * per_step :].clone()
    tail_coords[:, 0] -= S - steps  # re-based to 0..steps-1
    shifted = coords.clone()
    shifted[:, 0] += steps  # the tile follows them
    joint = torch.cat([tail, second])
    joint_coords = torch.cat([tail_coords, shifted])
    ref = dec(joint, joint_coords, torch.tensor([joint.shape[0]]))[tail.shape[0] :]
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, decode_with_cache(dec, second, coords, None), atol=1e-3)


@torch.no_grad()
def test_keys_are_stored_after_qk_norm_and_before_rope():
    dec = _decoder(depth=1)
    latent, coords = _tile(steps=3, seed=5)
    cache = KVCache(1)
    decode_with_cache(dec, latent, coords, cache)
    k, v, kept = cache.layer(0)
    attn = dec.transformer.blocks[0].attn
    h = dec.transformer.blocks[0].norm1(dec.in_proj(latent))
    qkv = attn.qkv(h).view(h.shape[0], 3, attn.heads, attn.head_dim)  # [n, 3, H, D]
    last = coords[:, 0] == 2
    assert torch.allclose(k, attn.k_norm(qkv[last, 1]), atol=1e-6)  # not rotated
    assert torch.allclose(v, qkv[last, 2], atol=1e-6)
    assert bool((kept[:, 0] == 0).all())  # re-based
    assert torch.equal(kept[:, 1:], coords[last][:, 1:])


@torch.no_grad()
def test_cache_size_is_bounded_over_many_tiles():
    dec = _decoder()
    cache = KVCache(2)
    sizes = []
    for seed in range(6):
        latent, coords = _tile(steps=2, seed=seed)
        decode_with_cache(dec, latent, coords, cache)
        sizes.append(cache.nbytes)
        assert cache.held_steps == 2
        assert int(cache.layer(0)[2][:, 0].max()) == 1  # coordinates stay bounded
    assert len(set(sizes)) == 1


def test_a_longer_cache_than_the_tile_keeps_earlier_steps():
    dec = _decoder(depth=1)
    cache = KVCache(3)
    with torch.no_grad():
        for seed in range(3):
            latent, coords = _tile(steps=2, seed=seed)
            decode_with_cache(dec, latent, coords, cache)
    assert cache.held_steps == 3
    assert sorted(set(cache.layer(0)[2][:, 0].tolist())) == [0, 1, 2]


def test_bad_arguments_are_typed_errors():
    with pytest.raises(ConfigError):
        KVCache(-1)
    dec = _decoder(depth=1)
    with pytest.raises(ConfigError):
        decode_with_cache(dec, torch.zeros(4, LATENT + 1), raster_coords((1, 2, 2)))


# ------------------------------------------------------------ the registered backend is used
@torch.no_grad()
def test_the_cache_path_calls_the_registered_backend_with_kv_seqlens():
    dec = _decoder(depth=2)
    first, coords = _tile(seed=6)
    second, _ = _tile(seed=7)
    n = coords.shape[0]
    calls = []

    def spy(q, k, v, seqlens, *, kv_seqlens=None):
        calls.append((q.shape[0], k.shape[0], seqlens.tolist(), kv_seqlens.tolist()))
        return attention_math(q, k, v, seqlens, kv_seqlens=kv_seqlens)

    def plain(q, k, v, seqlens):  # no kv_seqlens: call_attention falls back
        return attention_math(q, k, v, seqlens)

    outs = {}
    for name, fn in (("spy", spy), ("plain", plain), ("sdpa", attention_sdpa)):
        dec.set_attention_fn(fn)
        cache = KVCache(1)
        decode_with_cache(dec, first, coords, cache, steps=2)
        outs[name] = decode_with_cache(dec, second, coords, cache, steps=2)
    per_step = n // 2
    assert calls == [(n, n, [n], [n])] * 2 + [(n, n + per_step, [n], [n + per_step])] * 2
    assert torch.allclose(outs["plain"], outs["spy"], atol=1e-5)
    assert torch.allclose(outs["sdpa"], outs["spy"], atol=1e-5)


def test_a_cache_needs_one_sample_and_coords():
    dec = _decoder(depth=1)
    x = torch.zeros(4, dec.width)
    with pytest.raises(ConfigError, match="one sample"):
        dec.transformer(x, torch.tensor([2, 2]), raster_coords((1, 2, 2)), cache=KVCache(1))
    with pytest.raises(ConfigError, match="coords"):
        dec.transformer(x, torch.tensor([4]), None, cache=KVCache(1))


# ------------------------------------------------------------ time advances by the tile's steps
def _reference_stream(dec, tiles, S: int, W: int) -> list[torch.Tensor]:
    """Tile-by-tile decoding written out by hand: every layer's K (after qk-norm) and V are
    recorded with **absolute** times, and tile j (absolute steps jS..jS+S-1) attends to its
    own keys and to the recorded ones with t >= jS - W, through ``attention_math``."""
    blocks, rope = dec.transformer.blocks, dec.transformer.rope
    past = [[] for _ in blocks]  # per layer: (k [m, H, D], v [m, H, D], coords [m, 4])
    outs = []
    for j, (latent, local) in enumerate(tiles):
        coords = local.clone()
        coords[:, 0] += j * S  # absolute time
        x = dec.in_proj(latent)  # [n, C]
        n, C = x.shape
        for layer, block in enumerate(blocks):
            attn = block.attn
            qkv = attn.qkv(block.norm1(x)).view(n, 3, attn.heads, attn.head_dim)  # [n, 3, H, D]
            q, k, v = attn.q_norm(qkv[:, 0]), attn.k_norm(qkv[:, 1]), qkv[:, 2]
            seen = [(pk, pv, pc) for pk, pv, pc in past[layer] if pc.numel()]
            keep = [pc[:, 0] >= j * S - W for _, _, pc in seen]
            K = torch.cat([pk[m] for (pk, _, _), m in zip(seen, keep, strict=True)] + [k])
            V = torch.cat([pv[m] for (_, pv, _), m in zip(seen, keep, strict=True)] + [v])
            Kc = torch.cat([pc[m] for (_, _, pc), m in zip(seen, keep, strict=True)] + [coords])
            out = attention_math(
                rope(q, coords), rope(K, Kc), V, [n], kv_seqlens=[K.shape[0]]
            )  # [n, H, D]
            past[layer].append((k, v, coords))
            x = x + attn.proj(out.reshape(n, C))
            x = x + block.mlp(block.norm2(x))
        outs.append(dec.norm(x))  # [n, C]
    return outs


def _sparse_tiles(S: int, present: list[list[int]], gh: int = 2, gw: int = 2):
    """One tile per entry: tokens only at the listed local steps (an empty list: no tokens)."""
    tiles = []
    for j, steps in enumerate(present):
        latent, coords = _tile(steps=S, gh=gh, gw=gw, seed=10 + j)
        keep = torch.isin(coords[:, 0], torch.tensor(steps, dtype=torch.int32))
        tiles.append((latent[keep], coords[keep]))
    return tiles


#: per tile, the local steps that hold tokens (S = 3): last steps empty, an empty tile, a tile
#: with tokens at its first step only, a full tile, and one with only its last step
_PATTERN = [[0, 1], [0], [], [0, 1, 2], [2], [0]]


@pytest.mark.parametrize("W", [1, 2, 3, 5])
@torch.no_grad()
def test_sparse_tiles_match_the_absolute_time_reference(W):
    dec = _decoder(depth=2)
    S = 3
    tiles = _sparse_tiles(S, _PATTERN)
    expected = _reference_stream(dec, tiles, S, W)
    cache, old = KVCache(W), KVCache(W)
    old_rule_differs = False
    for j, ((latent, coords), ref) in enumerate(zip(tiles, expected, strict=True)):
        got = decode_with_cache(dec, latent, coords, cache, steps=S)
        assert got.shape == ref.shape == (latent.shape[0], dec.width)
        assert torch.allclose(got, ref, atol=1e-5)
        assert cache.held_steps == min(W, S * (j + 1))
        legacy = decode_with_cache(dec, latent, coords, old)  # steps=None: max t + 1
        old_rule_differs |= not torch.allclose(legacy, ref, atol=1e-4)
    assert old_rule_differs, "the sparse pattern must expose the old max t + 1 rule"


@torch.no_grad()
def test_dense_tiles_are_the_same_with_or_without_steps():
    """On full tiles ``max t + 1`` is the tile's length: steps=None keeps today's results."""
    dec = _decoder(depth=2)
    a, b = KVCache(2), KVCache(2)
    for seed in range(3):
        latent, coords = _tile(steps=3, seed=seed)
        explicit = decode_with_cache(dec, latent, coords, a, steps=3)
        assert torch.equal(decode_with_cache(dec, latent, coords, b), explicit)
        assert a.held_steps == b.held_steps == 2


@torch.no_grad()
def test_a_tile_with_tokens_only_at_its_first_step_advances_by_its_length():
    dec = _decoder(depth=1)
    latent, coords = _sparse_tiles(4, [[0]])[0]
    cache, old = KVCache(4), KVCache(4)
    decode_with_cache(dec, latent, coords, cache, steps=4)
    decode_with_cache(dec, latent, coords, old)
    assert cache.held_steps == 4 and old.held_steps == 1  # the old rule lost three steps
    assert bool((cache.layer(0)[2][:, 0] == 0).all())
    cache2 = KVCache(2)  # a window of 2 steps does not reach back to step 0 of 4
    decode_with_cache(dec, latent, coords, cache2, steps=4)
    assert cache2.held_steps == 2 and cache2.layer(0)[0].shape[0] == 0


@torch.no_grad()
def test_an_empty_tile_gives_no_tokens_and_ages_the_cache():
    dec = _decoder(depth=2)
    empty, no_coords = torch.zeros(0, LATENT), torch.zeros(0, 4, dtype=torch.int32)
    assert decode_with_cache(dec, empty, no_coords, None, steps=2).shape == (0, dec.width)
    fresh = KVCache(3)
    assert decode_with_cache(dec, empty, no_coords, fresh, steps=2).shape == (0, dec.width)
    assert fresh.held_steps == 2 and fresh.nbytes == 0

    latent, coords = _tile(steps=2, seed=8)  # t = 0, 1
    per_step = coords.shape[0] // 2
    cache = KVCache(3)
    decode_with_cache(dec, latent, coords, cache, steps=2)
    assert cache.held_steps == 2
    assert decode_with_cache(dec, empty, no_coords, cache, steps=2).shape == (0, dec.width)
    assert cache.held_steps == 3  # the window [1, 4): only the tile's step 1 is left
    k, v, held = cache.layer(1)
    assert k.shape[0] == v.shape[0] == per_step and bool((held[:, 0] == 0).all())
    decode_with_cache(dec, empty, no_coords, cache, steps=2)
    assert cache.held_steps == 3 and cache.layer(0)[0].shape[0] == 0  # aged out
    # and the next tile sees nothing: it decodes like an independent one
    got = decode_with_cache(dec, latent, coords, cache, steps=2)
    assert torch.allclose(got, decode_with_cache(dec, latent, coords, None), atol=1e-5)


def test_bad_steps_are_typed_errors():
    dec = _decoder(depth=1)
    latent, coords = _tile(steps=2)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="steps"):
            decode_with_cache(dec, latent, coords, KVCache(1), steps=bad)
        with pytest.raises(ConfigError, match="steps"):
            KVCache(1).commit(bad)
    with pytest.raises(ConfigError, match="outside"):
        decode_with_cache(dec, latent, coords, KVCache(1), steps=1)  # tokens at t = 1


@torch.no_grad()
def test_a_decoder_position_table_is_added_in_the_cached_path_too():
    """decoder_pos_table (the official decoder's learned 2D table): one pass without a cache
    equals decode_with_cache, and the table moves the output."""
    torch.manual_seed(0)
    tok = Tokenizer.from_preset(
        "tiny", decoder_depth=1, latent_dim=LATENT, decoder_pos_table=True
    ).eval()
    dec = tok.decoder
    assert dec.pos_table is not None and dec.pos_table.grid == (16, 16)
    latent, coords = _tile()
    n = torch.tensor([latent.shape[0]])
    ref = dec(latent, coords, n)
    assert torch.allclose(decode_with_cache(dec, latent, coords, KVCache(2)), ref, atol=1e-5)
    with torch.no_grad():
        dec.pos_table.weight.zero_()
    assert not torch.allclose(dec(latent, coords, n), ref, atol=1e-3)
