"""Temporal tiling: encode and decode clips of any length in tiles of ``tile_frames`` frames.

Shapes:
    clip   float32 [3, T, H, W] in [0, 1]; a tile is clip[:, s : s + tile_frames]
    S      latent steps per tile, S = tile_frames / pt (16 frames -> 4 steps)
    latent feats [N, L], coords int32 [N, 4] = (t, x, y, 0) with t the clip's absolute step

``Tokenizer.encode``/``decode``/``reconstruct`` already tile a long clip in memory
(``TokenizerConfig.tile_steps``); this module streams: a video file is read, encoded and decoded
one tile at a time, so memory is that of one tile however long the file is. It uses only the
public tokenizer API (``encode``, ``decode_tile``, ``kv_cache``, ``modality``).

The encoder sees each tile alone, with its time re-based to 0 (as in training); the latent's
coordinates are then shifted back to absolute time. The decoder works tile by tile too and keeps
a :class:`~atoken.core.kv_cache.KVCache` of the last ``kv_cache_steps`` latent steps, so a tile
attends to the end of the previous one (``kv_cache_steps=0``: independent tiles).

    latent = encode_tiled(tok, clip)                 # SparseLatent, one sample
    recon = decode_tiled(tok, latent)                # [3, T, H, W]
    for start, original, recon in iter_reconstruct(tok, "clip.mp4"): ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import attrs
import torch

from atoken.core.coords import time_window
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent

__all__ = [
    "TilingConfig",
    "decode_tiled",
    "encode_tiled",
    "iter_clip_tiles",
    "iter_decode_tiles",
    "iter_reconstruct",
    "reconstruct_tiled",
]


def _positive(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be a positive int, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ConfigError(f"{attribute.name} must be an int >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class TilingConfig:
    """How a clip is tiled in time.

    Args:
        tile_frames: frames per tile (a multiple of the temporal patch; 16 = 4 latent steps).
        kv_cache_steps: latent steps of K/V the decoder keeps across tiles (0: independent).
        frame_stride: keep every s-th frame of a video file.
    """

    tile_frames: int = attrs.field(default=16, validator=_positive)
    kv_cache_steps: int = attrs.field(default=4, validator=_non_negative)
    frame_stride: int = attrs.field(default=1, validator=_positive)

    def steps(self, temporal_patch: int) -> int:
        """S, latent steps per tile.

        Raises:
            ConfigError: ``tile_frames`` is not a multiple of ``temporal_patch``.
        """
        if self.tile_frames % temporal_patch:
            raise ConfigError(
                f"tile_frames ({self.tile_frames}) must be a multiple of the temporal patch "
                f"({temporal_patch})"
            )
        return self.tile_frames // temporal_patch


def _config(config: TilingConfig | None, **kwargs: Any) -> TilingConfig:
    base = config or TilingConfig()
    given = {k: v for k, v in kwargs.items() if v is not None}
    return attrs.evolve(base, **given) if given else base


def iter_clip_tiles(
    clip: Any, tile_frames: int, *, frame_stride: int = 1
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start frame, tile [3, t, H, W] float in [0, 1])`` of a clip tensor, array, frame list
    or video file; a file is decoded one tile at a time (memory of one tile).

    Raises:
        ModalityInputError: the modality's errors (zero frames, bad file, ...).
    """
    from atoken.data.video_io import iter_video_frames
    from atoken.modalities.video.clips import to_video_tensor

    if isinstance(clip, (str, os.PathLike)):
        frames: list[torch.Tensor] = []
        start = 0
        for array in iter_video_frames(clip, frame_stride=frame_stride):
            frames.append(torch.from_numpy(array).permute(2, 0, 1))  # [3, H, W] uint8
            if len(frames) == tile_frames:
                yield start, to_video_tensor(frames)
                start, frames = start + tile_frames, []
        if frames:
            yield start, to_video_tensor(frames)
        elif start == 0:
            raise ModalityInputError(f"video: {os.fspath(clip)!r} gave no frames")
        return
    x = to_video_tensor(clip, frame_stride=frame_stride)  # [3, T, H, W]
    for start in range(0, x.shape[1], tile_frames):
        yield start, x[:, start : start + tile_frames]


def _shift_t(coords: torch.Tensor, offset: int) -> torch.Tensor:
    coords = coords.clone()
    coords[:, 0] += offset
    return coords


@torch.no_grad()
def encode_tiled(
    tokenizer: Any,
    clip: Any,
    *,
    config: TilingConfig | None = None,
    tile_frames: int | None = None,
    frame_stride: int | None = None,
) -> SparseLatent:
    """One clip -> its latent (one sample), the encoder run on each tile alone.

    ``meta`` holds the clip's ``size [T, H, W]``, ``grid [gt, gh, gw]``, ``patch``,
    ``tile_frames`` and ``tile_steps``, so :func:`decode_tiled` and ``Tokenizer.decode`` decode
    it with the same tiles.
    """
    cfg = _config(config, tile_frames=tile_frames, frame_stride=frame_stride)
    pt = tokenizer.config.encoder.temporal_patch
    S = cfg.steps(pt)
    feats: list[torch.Tensor] = []
    coords: list[torch.Tensor] = []
    patch: list[int] = []
    T = 0
    size: list[int] = []
    for start, tile in iter_clip_tiles(clip, cfg.tile_frames, frame_stride=cfg.frame_stride):
        part = tokenizer.encode([tile], "video", tile_steps=S)  # t re-based to the tile
        feats.append(part.feats)
        coords.append(_shift_t(part.coords, (start // cfg.tile_frames) * S))
        patch = part.meta[0]["patch"]
        T = start + tile.shape[1]
        size = [T, int(tile.shape[2]), int(tile.shape[3])]
    modality = tokenizer.modality("video")
    meta = {
        "size": size,
        "grid": list(modality.grid_of(*size)),
        "patch": patch,
        "tile_frames": cfg.tile_frames,
        "tile_steps": S,
    }
    all_feats = torch.cat(feats)  # [N, L]
    seqlens = torch.tensor([all_feats.shape[0]], dtype=torch.int64)
    return SparseLatent(all_feats, torch.cat(coords), seqlens, modality="video", meta=[meta])


@torch.no_grad()
def iter_decode_tiles(
    tokenizer: Any,
    latent: SparseLatent,
    *,
    config: TilingConfig | None = None,
    tile_frames: int | None = None,
    kv_cache_steps: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start frame, reconstructed tile [3, t, H, W])`` of a one-clip latent, in order.

    The tile length defaults to the one :func:`encode_tiled` recorded in the latent's meta.

    Raises:
        ConfigError: a latent of several samples or of another modality, or no decoder.
    """
    if latent.batch_size != 1 or latent.modality[0] != "video":
        raise ConfigError("decode_tiled takes the latent of one video clip")
    if config is None and tile_frames is None:
        tile_frames = latent.meta[0].get("tile_frames")
    cfg = _config(config, tile_frames=tile_frames, kv_cache_steps=kv_cache_steps)
    pt = tokenizer.config.encoder.temporal_patch
    S = cfg.steps(pt)
    T, H, W = (int(v) for v in latent.meta[0]["size"])
    modality = tokenizer.modality("video")
    _, gh, gw = modality.grid_of(T, H, W)
    cache = tokenizer.kv_cache(cfg.kv_cache_steps)
    for start in range(0, T, cfg.tile_frames):
        k = start // cfg.tile_frames
        frames = min(cfg.tile_frames, T - start)
        steps = -(-frames // pt)
        rows, coords = time_window(latent.coords, k * S, steps)  # [n] (may be 0), [n, 4]
        meta = {"size": [frames, H, W], "grid": [steps, gh, gw], "patch": latent.meta[0]["patch"]}
        tile = SparseLatent(
            latent.feats[rows], coords, [rows.numel()], modality="video", meta=[meta]
        )
        yield start, tokenizer.decode_tile(tile, cache, steps=steps)[0]


def decode_tiled(tokenizer: Any, latent: SparseLatent, **kwargs: Any) -> torch.Tensor:
    """A one-clip latent -> the clip ``[3, T, H, W]`` (unclamped); see :func:`iter_decode_tiles`."""
    return torch.cat([tile for _, tile in iter_decode_tiles(tokenizer, latent, **kwargs)], dim=1)


@torch.no_grad()
def iter_reconstruct(
    tokenizer: Any,
    clip: Any,
    *,
    config: TilingConfig | None = None,
    tile_frames: int | None = None,
    kv_cache_steps: int | None = None,
    frame_stride: int | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Stream ``(start frame, original tile, reconstructed tile)``: each tile is read, encoded
    and decoded (with the KV cache) before the next is read, so memory is that of one tile."""
    cfg = _config(
        config, tile_frames=tile_frames, kv_cache_steps=kv_cache_steps, frame_stride=frame_stride
    )
    pt = tokenizer.config.encoder.temporal_patch
    S = cfg.steps(pt)
    cache = tokenizer.kv_cache(cfg.kv_cache_steps)
    for start, tile in iter_clip_tiles(clip, cfg.tile_frames, frame_stride=cfg.frame_stride):
        part = tokenizer.encode([tile], "video", tile_steps=S)  # t re-based to the tile
        steps = -(-tile.shape[1] // pt)
        yield start, tile, tokenizer.decode_tile(part, cache, steps=steps)[0]


def reconstruct_tiled(tokenizer: Any, clip: Any, **kwargs: Any) -> torch.Tensor:
    """``decode_tiled(encode_tiled(clip))`` in one streaming pass: ``[3, T, H, W]``."""
    return torch.cat([r for _, _, r in iter_reconstruct(tokenizer, clip, **kwargs)], dim=1)
