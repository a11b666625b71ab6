"""The decoder KV cache: what it stores, against the plain decoder as an oracle."""

from __future__ import annotations

import pytest
import torch

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
