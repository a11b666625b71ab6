"""Temporal tiling: long clips round-trip tile by tile, with memory bounded by the tile."""

from __future__ import annotations

import pytest
import torch

from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.data.video_io import write_video
from atoken.modalities.video.tiling import (
    TilingConfig,
    decode_tiled,
    encode_tiled,
    iter_reconstruct,
    reconstruct_tiled,
)
from atoken.tokenizer import Tokenizer

TILE = 8  # frames: 2 latent steps with the 4-frame tubelet


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    model = Tokenizer.from_preset("tiny", latent_dim=8).eval()
    with torch.no_grad():  # the pixel head starts at zero: give it weights so outputs differ
        torch.nn.init.normal_(model.head.proj.weight, std=0.05)
    return model


def _clip(frames: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, frames, size, size, generator=g)


class _MaxTokens:
    """Records the largest token count any call of a module saw (a forward pre-hook)."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.most = 0
        self.handles = [m.register_forward_pre_hook(self) for m in modules]

    def __call__(self, module, args):
        self.most = max(self.most, int(args[0].shape[0]))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def test_a_clip_longer_than_three_tiles_round_trips_with_bounded_memory(tok):
    peaks = {}
    for frames in (3 * TILE + 5, 7 * TILE + 5):  # 3.6 and 7.6 tiles
        clip = _clip(frames)
        spy = _MaxTokens(tok.encoder.patch_embed, tok.decoder.in_proj, tok.head)
        try:
            latent = encode_tiled(tok, clip, tile_frames=TILE)
            recon = decode_tiled(tok, latent, tile_frames=TILE, kv_cache_steps=2)
        finally:
            spy.close()
        assert recon.shape == clip.shape
        assert latent.meta[0]["size"] == [frames, 32, 32]
        assert int(latent.coords[:, 0].max()) == -(-frames // 4) - 1  # absolute time
        peaks[frames] = spy.most
        # One streaming pass gives the same frames as encode-all-then-decode.
        streamed = reconstruct_tiled(tok, clip, tile_frames=TILE, kv_cache_steps=2)
        assert torch.allclose(streamed, recon, atol=1e-5)
    # The largest call is one tile (2 steps x 2 x 2 tokens) whatever the clip length.
    assert set(peaks.values()) == {2 * 2 * 2}


def test_cache_off_means_independent_tiles_and_cache_on_links_them(tok):
    clip = _clip(3 * TILE, seed=1)
    off = reconstruct_tiled(tok, clip, tile_frames=TILE, kv_cache_steps=0)
    with torch.no_grad():
        for start in range(0, 3 * TILE, TILE):
            alone = tok.reconstruct([clip[:, start : start + TILE]], "video")[0]
            assert torch.allclose(off[:, start : start + TILE], alone, atol=1e-5)
    on = reconstruct_tiled(tok, clip, tile_frames=TILE, kv_cache_steps=2)
    assert torch.allclose(on[:, :TILE], off[:, :TILE], atol=1e-5)  # the first tile has no past
    assert not torch.allclose(on[:, TILE:], off[:, TILE:], atol=1e-4)


def test_the_encoder_sees_each_tile_alone(tok):
    clip = _clip(2 * TILE + 4, seed=2)
    latent = encode_tiled(tok, clip, tile_frames=TILE)
    with torch.no_grad():
        last = tok.encode([clip[:, 2 * TILE :]], "video")  # the 4-frame tail, encoded alone
    rows = latent.coords[:, 0] >= 4
    assert torch.allclose(latent.feats[rows], last.feats, atol=1e-5)


def test_tiles_stream_from_a_video_file(tok, tmp_path):
    clip = _clip(2 * TILE + 3, seed=3)
    path = write_video(clip, tmp_path / "clip.mp4", fps=8)
    starts = [s for s, original, recon in iter_reconstruct(tok, path, tile_frames=TILE)]
    assert starts == [0, TILE, 2 * TILE]
    latent = encode_tiled(tok, str(path), tile_frames=TILE, frame_stride=2)
    assert latent.meta[0]["size"][0] == -(-(2 * TILE + 3) // 2)


def test_bad_tiling_arguments_are_typed_errors(tok, tmp_path):
    with pytest.raises(ConfigError):
        TilingConfig(tile_frames=0)
    with pytest.raises(ConfigError):
        TilingConfig(kv_cache_steps=-1)
    with pytest.raises(ConfigError, match="multiple"):
        encode_tiled(tok, _clip(8), tile_frames=6)
    with pytest.raises(ModalityInputError):
        encode_tiled(tok, torch.zeros(3, 0, 16, 16))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ModalityInputError):
        encode_tiled(tok, str(bad))
    two = encode_tiled(tok, _clip(4))
    with pytest.raises(ConfigError):
        decode_tiled(tok, two.replace(modality=("image",)))


def test_a_clip_above_max_tokens_needs_tiling(tok):
    from atoken.core.errors import TooManyTokensError
    from atoken.modalities.video import VideoModality

    small = VideoModality(max_tokens=8)
    default = tok._modalities.get("video")
    tok._modalities["video"] = small  # the modality the tokenizer builds, with a low limit
    try:
        clip = _clip(3 * TILE)  # 6 steps x 2 x 2 = 24 tokens
        with pytest.raises(TooManyTokensError, match="tiles"):
            tok.encode([clip], "video")
        latent = encode_tiled(tok, clip, tile_frames=TILE)  # 8 tokens per tile
        assert latent.num_tokens == 24
        assert decode_tiled(tok, latent, tile_frames=TILE).shape == clip.shape
    finally:
        if default is None:
            tok._modalities.pop("video")
        else:
            tok._modalities["video"] = default


def test_reconstruct_cli_accepts_mp4_and_rejects_a_corrupt_one(tok, tmp_path):
    from click.testing import CliRunner

    from atoken.cli import main

    ckpt = tmp_path / "ckpt"
    tok.save_pretrained(ckpt)
    good = write_video(_clip(TILE + 4, seed=4), tmp_path / "good.mp4", fps=8)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    args = ["reconstruct", "--checkpoint", str(ckpt), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, str(good)])
    assert result.exit_code == 0, result.output
    assert "good" in result.output and "12x32x32" in result.output
    for name in ("good_recon.mp4", "good_side_by_side.gif", "good_side_by_side.mp4"):
        assert (out / name).stat().st_size > 0
    failed = CliRunner().invoke(main, [*args, str(bad)])
    assert failed.exit_code != 0 and "ModalityInputError" in failed.output
    first = CliRunner().invoke(main, [*args, "--max-frames", "4", str(good)])
    assert first.exit_code == 0 and "4x32x32" in first.output, first.output


def test_decode_uses_the_tile_length_the_latent_was_encoded_with(tok):
    clip = _clip(3 * 8 + 4, seed=4)
    latent = encode_tiled(tok, clip, tile_frames=8)
    assert latent.meta[0]["tile_frames"] == 8
    default = decode_tiled(tok, latent, kv_cache_steps=0)
    explicit = decode_tiled(tok, latent, tile_frames=8, kv_cache_steps=0)
    longer = decode_tiled(tok, latent, tile_frames=16, kv_cache_steps=0)
    assert default.shape == clip.shape
    assert torch.allclose(default, explicit, atol=1e-6)
    assert not torch.allclose(default, longer, atol=1e-4)  # the tile length matters


def test_decode_tiled_of_a_latent_with_an_empty_tile(tok):
    """A box query can leave a tile without tokens: it decodes (to the head's empty output)
    and the next tile keeps the true time distance to the one before."""
    clip = _clip(3 * TILE, seed=5)
    latent = encode_tiled(tok, clip, tile_frames=TILE)
    t = latent.coords[:, 0]
    keep = torch.nonzero((t < 2) | (t >= 4)).flatten()  # drop tile 1 (steps 2, 3)
    holed = SparseLatent(
        latent.feats[keep], latent.coords[keep], [keep.numel()], modality="video", meta=latent.meta
    )
    recon = decode_tiled(tok, holed, tile_frames=TILE, kv_cache_steps=2)
    assert recon.shape == clip.shape and bool(torch.isfinite(recon).all())
    full = decode_tiled(tok, latent, tile_frames=TILE, kv_cache_steps=2)
    assert torch.allclose(recon[:, :TILE], full[:, :TILE], atol=1e-5)  # tile 0 unchanged
    # Tile 2 no longer sees tile 1 (empty) and tile 0 is out of its 2-step window.
    with torch.no_grad():
        alone = decode_tiled(tok, holed, tile_frames=TILE, kv_cache_steps=0)
    assert torch.allclose(recon[:, 2 * TILE :], alone[:, 2 * TILE :], atol=1e-5)
    assert not torch.allclose(recon[:, 2 * TILE :], full[:, 2 * TILE :], atol=1e-4)
