"""Video pictures: side-by-side clips (original | reconstruction) as GIF and MP4.

Shapes: clips float32 [3, T, H, W] in [0, 1].
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from atoken.data.video_io import write_gif, write_video

__all__ = ["reconstruct_video_file", "save_clip_side_by_side"]


def save_clip_side_by_side(
    original: torch.Tensor, reconstruction: torch.Tensor, stem: str | Path, *, fps: float = 8.0
) -> tuple[Path, Path]:
    """Write ``stem.gif`` and ``stem.mp4``: original | reconstruction side by side, per frame."""
    _, T, H, _ = original.shape
    gutter = torch.ones(3, T, H, 4)  # white
    both = torch.cat([original.clamp(0, 1), gutter, reconstruction.clamp(0, 1)], dim=3)
    stem = Path(stem)
    gif = write_gif(both, stem.with_suffix(".gif"), fps=fps)
    mp4 = write_video(both, stem.with_suffix(".mp4"), fps=fps)
    return gif, mp4


@torch.no_grad()
def reconstruct_video_file(
    tokenizer: Any,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tile_frames: int = 16,
    kv_cache_steps: int = 4,
    max_frames: int | None = None,
    fps: float | None = None,
) -> dict[str, Any]:
    """Reconstruct a video file in temporal tiles; write ``<stem>_recon.mp4`` and
    ``<stem>_side_by_side.{gif,mp4}`` to ``out_dir``. Returns the stem, size and mean PSNR.

    Raises:
        ModalityInputError: a corrupt, empty or non-video file.
    """
    from atoken.data.video_io import read_video, video_info
    from atoken.modalities.video.tiling import reconstruct_tiled

    clip = read_video(path, max_frames=max_frames).float() / 255  # [3, T, H, W]
    rate = fps or video_info(path)["fps"] or 8.0
    recon = reconstruct_tiled(
        tokenizer, clip, tile_frames=tile_frames, kv_cache_steps=kv_cache_steps
    ).clamp(0, 1)
    out = Path(out_dir)
    stem = Path(path).stem
    write_video(recon, out / f"{stem}_recon.mp4", fps=rate)
    save_clip_side_by_side(clip, recon, out / f"{stem}_side_by_side", fps=rate)
    mse = ((recon - clip) ** 2).flatten(2).mean(dim=(0, 2))  # [T] per frame
    psnr = sum(10 * math.log10(1 / max(float(m), 1e-12)) for m in mse) / len(mse)
    return {"stem": stem, "size": list(clip.shape[1:]), "psnr": psnr}
