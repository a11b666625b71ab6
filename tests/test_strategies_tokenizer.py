"""The test kit's tokenizer strategies, used as a plugin author would, on the ``tiny`` preset
built once per module: decodable latents through ``decode``, mixed-modality batches through
``encode``, tiling plans through the video tiling code and the tokenizer's time tiles."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import atoken
from atoken.core.coords import raster_coords, time_window
from atoken.modalities.video.tiling import (
    TilingConfig,
    decode_tiled,
    encode_tiled,
    iter_clip_tiles,
)
from atoken.testing.strategies import (
    decodable_latents,
    images,
    mixed_batches,
    tiling_plans,
    videos,
)

FEW = settings(max_examples=8, deadline=None)


@pytest.fixture(scope="module")
def tok():
    return atoken.create_tokenizer("tiny")


@pytest.fixture(scope="module")
def fsq_tok():
    params = {"levels": [8, 5, 5, 5], "groups": 8}
    return atoken.create_tokenizer("tiny", bottleneck="fsq", bottleneck_params=params)


def _tensor(sample: Any) -> torch.Tensor:
    return sample.as_tensor() if hasattr(sample, "as_tensor") else torch.as_tensor(sample)


def _close(a: Any, b: Any) -> bool:
    return torch.allclose(_tensor(a), _tensor(b), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- decodable latents
@FEW
@given(data=st.data())
def test_decodable_latents_decode_as_a_batch_and_one_by_one(tok, data):
    latent = data.draw(decodable_latents(tokenizer=tok, max_samples=3))
    assert latent.channels == tok.config.latent_dim
    assert set(latent.modality) <= set(tok.modalities)
    with torch.no_grad():
        out = tok.decode(latent)
        assert len(out) == latent.batch_size
        for b, part in enumerate(latent.unpack()):
            layout = tok.modality(part.modality[0]).layout
            unused = [c for c in range(4) if c not in atoken.core.coords.LAYOUTS[layout]]
            assert not bool(part.coords[:, unused].any())
            assert _close(out[b], tok.decode(part)[0])  # packing changes nothing


@FEW
@given(data=st.data())
def test_decodable_latents_of_pixel_modalities_decode_to_their_size(tok, data):
    names = ["image", "video"]
    latent = data.draw(decodable_latents(tokenizer=tok, modalities=names, min_samples=1))
    with torch.no_grad():
        out = tok.decode(latent)
    for sample, meta in zip(out, latent.meta, strict=True):
        assert tuple(sample.shape) == (3, *meta["size"])


@FEW
@given(data=st.data())
def test_decodable_latents_of_a_discrete_tokenizer_are_its_codes(fsq_tok, data):
    latent = data.draw(decodable_latents(tokenizer=fsq_tok, max_samples=2))
    table = fsq_tok.bottleneck.level_table  # [G, d]
    half = (table // 2).float()
    index = latent.feats.reshape(latent.num_tokens, *table.shape) * half + half  # [N, G, d]
    assert torch.equal(index, index.round()) and bool((index < table).all())
    with torch.no_grad():
        assert len(fsq_tok.decode(latent)) == latent.batch_size


def test_decodable_latents_draw_from_given_samples(tok):
    @FEW
    @given(decodable_latents(tokenizer=tok, samples={"image": images(max_side=20)}))
    def check(latent):
        assert set(latent.modality) <= {"image"}
        assert all(max(m["size"]) <= 20 for m in latent.meta)

    check()


# --------------------------------------------------------------------------- mixed batches
@FEW
@given(data=st.data())
def test_mixed_batches_encode_as_each_sample_alone(tok, data):
    samples, names = data.draw(mixed_batches(tokenizer=tok, max_samples=3))
    with torch.no_grad():
        latent = tok.encode(samples, modality=names)
        assert latent.modality == tuple(names) and latent.batch_size == len(samples)
        for sample, name, part in zip(samples, names, latent.unpack(), strict=True):
            alone = tok.encode([sample], modality=name)
            assert torch.equal(alone.coords, part.coords) and alone.meta == part.meta
            assert torch.allclose(alone.feats, part.feats, atol=1e-4, rtol=1e-4)


@FEW
@given(
    batch=mixed_batches(
        samples={"image": images(max_side=24), "video": videos(max_frames=5, max_side=20)},
        min_samples=2,
        min_modalities=2,
    )
)
def test_mixed_batches_of_given_samples_round_trip_in_shape(tok, batch):
    samples, names = batch
    assert set(names) == {"image", "video"}
    with torch.no_grad():
        out = tok.reconstruct(samples, modality=names)
    for sample, recon in zip(samples, out, strict=True):
        assert recon.shape == sample.shape


def test_mixed_batch_arguments_are_checked(tok):
    for strategy in (
        mixed_batches(),
        mixed_batches(samples={}),
        mixed_batches(tokenizer=tok, min_modalities=4),
        mixed_batches(tokenizer=tok, min_samples=3, max_samples=2),
    ):

        @settings(max_examples=1, deadline=None)
        @given(strategy)
        def draw(value):
            pass

        with pytest.raises(InvalidArgument):
            draw()


# --------------------------------------------------------------------------- tiling plans
@settings(max_examples=25, deadline=None)
@given(plan=tiling_plans(max_tiles=4, max_frame_stride=3), data=st.data())
def test_tiling_plans_cut_clips_as_the_video_tiling_does(plan, data):
    clip = data.draw(videos(min_frames=plan.frames, max_frames=plan.frames, max_side=4))
    tiles = list(iter_clip_tiles(clip, plan.tile_frames, frame_stride=plan.frame_stride))
    assert [(start, t.shape[1]) for start, t in tiles] == plan.frame_tiles()
    assert torch.equal(torch.cat([t for _, t in tiles], dim=1), clip[:, :: plan.frame_stride])
    assert TilingConfig(tile_frames=plan.tile_frames).steps(plan.temporal_patch) == plan.tile_steps


@settings(max_examples=25, deadline=None)
@given(plan=tiling_plans(temporal_patch=2), gh=st.integers(1, 3), gw=st.integers(1, 3))
def test_tiling_plans_partition_a_latent_in_time(plan, gh, gw):
    coords = raster_coords((plan.latent_steps, gh, gw), layout="thw")  # [n, 4]
    seen = []
    for start, steps in plan.step_tiles():
        rows, local = time_window(coords, start, steps)  # [n_k], [n_k, 4]
        assert rows.numel() == steps * gh * gw
        assert int(local[:, 0].min()) == 0 and int(local[:, 0].max()) == steps - 1
        seen.append(rows)
    assert torch.equal(torch.cat(seen), torch.arange(coords.shape[0]))


@FEW
@given(data=st.data())
def test_tiling_plans_through_the_tokenizer(tok, data):
    plan = data.draw(tiling_plans(temporal_patch=tok.config.encoder.temporal_patch, max_tiles=3))
    clip = data.draw(
        videos(min_frames=plan.frames, max_frames=plan.frames, min_side=16, max_side=24)
    )
    config = TilingConfig(
        tile_frames=plan.tile_frames,
        kv_cache_steps=plan.kv_cache_steps,
        frame_stride=plan.frame_stride,
    )
    kept = clip[:, :: plan.frame_stride]
    with torch.no_grad():
        latent = encode_tiled(tok, clip, config=config)
        assert latent.meta[0]["tile_steps"] == plan.tile_steps
        assert int(latent.coords[:, 0].max()) + 1 == plan.latent_steps
        whole = tok.encode([kept], "video", tile_steps=plan.tile_steps)
        assert torch.equal(whole.coords, latent.coords)
        assert torch.allclose(whole.feats, latent.feats, atol=1e-4, rtol=1e-4)
        streamed = decode_tiled(tok, latent, config=config)
        assert streamed.shape == (3, plan.kept_frames, *clip.shape[2:])
        decoded = tok.decode(latent, kv_cache_steps=plan.kv_cache_steps)[0]
        assert torch.allclose(decoded, streamed, atol=1e-4, rtol=1e-4)
