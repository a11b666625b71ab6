"""The built-in ``video`` modality: clips as tubelets in the same 4D space as images (t > 0).

Shapes:
    clip   float32 [3, T, H, W] in [0, 1] (the canonical form every input is converted to)
    values float32 [n, pt * p * p * 3], one tubelet of pt frames x p x p pixels per token,
           laid out as (pt, ph, pw, c) like the image modality (whose image fills slot 0)
    coords int32 [n, 4] = (t, x, y, 0): t the tubelet index, x the column, y the row

Every input is converted to a clip by :func:`atoken.modalities.video.clips.to_video_tensor`
(tensors, arrays, lists of frames, video files). A length that is not a multiple of ``pt`` is
padded by repeating the last frame, and sizes that are not a multiple of ``p`` by edge
replication; both are cropped back on decode.

A clip of more than ``max_tokens`` tokens is refused with ``TooManyTokensError``: encode long
clips in temporal tiles (:mod:`atoken.modalities.video.tiling`), whose memory does not grow
with the length.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from atoken.core.coords import raster_coords, scatter_to_grid
from atoken.core.errors import ModalityInputError, TooManyTokensError
from atoken.core.modality import Modality, check_decode_grid, check_positive_ints, rgb_stats
from atoken.data.video_io import VIDEO_EXTENSIONS, read_video, video_info
from atoken.modalities.video.clips import to_video_tensor
from atoken.plugins.hookspecs import hookimpl

__all__ = ["VideoModality", "to_video_tensor"]


class VideoModality(Modality):
    """Video clips at native resolution as ``pt x p x p`` tubelets.

    Args:
        patch_size: spatial patch p (16).
        temporal_patch: frames per tubelet pt (4).
        max_tokens: refuse (``TooManyTokensError``) a clip with more tokens than this.
        min_side: the smallest accepted frame height or width in pixels.
        frame_stride: keep every ``frame_stride``-th frame of each input (1: all).
        input_mean, input_std: the per-channel (RGB) normalisation of the [0, 1] pixels the
            model reads (the tokenizer passes its config's; SigLIP2: 0.5, 0.5).

    Every value is content. The tokenizer encodes and decodes a clip longer than its tile
    (``TokenizerConfig.tile_steps`` latent steps, 16 frames) in temporal tiles.
    """

    name = "video"
    layout = "thw"
    shared_pixel_path = True  # RGB patches: the shared patch embedding and head
    sample_kind = "clip"  # [3, T, H, W] in [0, 1]
    file_extensions = (*VIDEO_EXTENSIONS, ".npy")  # what `load` reads
    sample_ndim = 4  # [C, T, H, W]; a [B, C, T, H, W] tensor is a batch

    def __init__(
        self,
        *,
        patch_size: int = 16,
        temporal_patch: int = 4,
        max_tokens: int = 16384,
        min_side: int = 2,
        frame_stride: int = 1,
        input_mean: Sequence[float] = (0.5, 0.5, 0.5),
        input_std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        check_positive_ints(
            "video",
            patch_size=patch_size,
            temporal_patch=temporal_patch,
            max_tokens=max_tokens,
            min_side=min_side,
            frame_stride=frame_stride,
        )
        self.patch_size = patch_size
        self.temporal_patch = temporal_patch
        self.max_tokens = max_tokens
        self.min_side = min_side
        self.frame_stride = frame_stride
        self.value_mean, self.value_std = rgb_stats("video", input_mean, input_std)
        self.value_dim = temporal_patch * patch_size * patch_size * 3

    def grid_of(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        """The token grid ``(gt, gh, gw)`` of a ``T x H x W`` clip."""
        p, pt = self.patch_size, self.temporal_patch
        return -(-T // pt), -(-H // p), -(-W // p)

    def check_size(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        """The token grid ``(gt, gh, gw)`` of a ``T x H x W`` clip (frames already strided).

        Raises:
            TooManyTokensError: more than ``max_tokens`` tokens.
        """
        gt, gh, gw = self.grid_of(int(T), int(H), int(W))
        n = gt * gh * gw
        if n > self.max_tokens:
            raise TooManyTokensError(
                f"video: {T}x{H}x{W} gives {n} tokens, above max_tokens={self.max_tokens}; "
                'raise max_tokens (modality_params={"video": {"max_tokens": ...}}) or stream '
                "it in tiles with atoken.modalities.video.tiling"
            )
        return gt, gh, gw

    def _read_bounded(self, path: str | os.PathLike) -> torch.Tensor:
        """Decode a video file, at most the frames ``max_tokens`` allows plus one: uint8
        ``[3, T, H, W]`` (the header is checked first when it records the frame count)."""
        info = video_info(path)
        H, W, s = int(info["height"]), int(info["width"]), self.frame_stride
        if info["frames"]:
            self.check_size(-(-int(info["frames"]) // s), H, W)
        _, gh, gw = self.check_size(1, H, W)
        most = (self.max_tokens // (gh * gw)) * self.temporal_patch  # frames that fit
        clip = read_video(path, frame_stride=s, max_frames=most + 1)  # [3, T, H, W]
        if clip.shape[1] > most:
            raise TooManyTokensError(
                f"video: {os.fspath(path)!r} has more than {most} frames (stride {s}) of "
                f"{H}x{W}, above max_tokens={self.max_tokens}; raise max_tokens or stream it "
                "in tiles with atoken.modalities.video.tiling"
            )
        return clip

    def load(self, path: str | os.PathLike) -> torch.Tensor:
        """A video file as float32 ``[3, T, H, W]`` in [0, 1] (decoded no further than the
        token guard allows), or a ``.npy`` clip as it is."""
        if str(path).lower().endswith(".npy"):
            return super().load(path)
        return to_video_tensor(self._read_bounded(path), min_side=self.min_side)

    def streams(self, path: str | os.PathLike) -> bool:
        """Every file it reads but a ``.npy`` clip (which is loaded) is a video file,
        reconstructed in temporal tiles and never decoded whole."""
        return not os.fspath(path).lower().endswith(".npy")

    def reconstruct_stream(
        self, tokenizer: Any, path: str | os.PathLike, out: Any, *, max_frames: int | None = None
    ) -> tuple[str, str]:
        """``<stem>_recon.mp4`` and a side-by-side GIF and MP4, reconstructed in temporal
        tiles (:func:`atoken.modalities.video.viz.reconstruct_video_file`); returns
        ``("TxHxW", "PSNR x dB")``, the PSNR averaged over frames."""
        from atoken.modalities.video.viz import reconstruct_video_file

        written = reconstruct_video_file(tokenizer, path, out, max_frames=max_frames)
        return "x".join(map(str, written["size"])), f"PSNR {written['psnr']:.2f} dB"

    def draw(self, sample: Any, reference: Any = None) -> torch.Tensor | None:
        """The clip's middle frame ``[3, H, W]`` (previews and reports)."""
        if not isinstance(sample, torch.Tensor) or sample.ndim != 4:
            return None
        return sample[:, sample.shape[1] // 2].detach().float().cpu().clamp(0, 1)  # [3, H, W]

    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        stride = self.frame_stride
        if isinstance(sample, (str, os.PathLike)):  # decode no more than the guard allows
            sample, stride = self._read_bounded(sample), 1
        elif isinstance(sample, (torch.Tensor, np.ndarray)) and sample.ndim == 4:
            # tensors are [C, T, H, W], arrays [T, H, W, C]: check the shape, convert after
            _, T, H, W = (
                sample.shape if isinstance(sample, torch.Tensor) else (0, *sample.shape[:3])
            )
            self.check_size(-(-int(T) // stride), H, W)
        x = to_video_tensor(sample, min_side=self.min_side, frame_stride=stride)
        _, T, H, W = x.shape  # [3, T, H, W]
        p, pt = self.patch_size, self.temporal_patch
        gt, gh, gw = self.check_size(T, H, W)
        n = gt * gh * gw
        if gt * pt != T:  # repeat the last frame
            x = torch.cat([x, x[:, -1:].expand(-1, gt * pt - T, -1, -1)], dim=1)
        if (gh * p, gw * p) != (H, W):
            x = F.pad(x, (0, gw * p - W, 0, gh * p - H), mode="replicate")  # [3, gt*pt, ., .]
        tubes = x.reshape(3, gt, pt, gh, p, gw, p)  # [c, gt, pt, gh, ph, gw, pw]
        tubes = tubes.permute(1, 3, 5, 2, 4, 6, 0)  # [gt, gh, gw, pt, ph, pw, c]
        values = tubes.reshape(n, self.value_dim)  # [n, pt*p*p*c]
        coords = raster_coords((gt, gh, gw), layout=self.layout)  # [n, 4] = (t, x, y, 0)
        meta = {"size": [T, H, W], "grid": [gt, gh, gw], "patch": [pt, p, p]}
        return values.contiguous(), coords, meta

    def split_time(self, sample: Any, steps: int) -> list[torch.Tensor] | None:
        """Views of ``steps * pt`` frames each (the last shorter): the tokenizer tiles a long
        clip without patchifying it whole (None with a ``frame_stride``: the stride applies to
        the whole clip). A video file is checked against ``max_tokens`` from its header (and
        decoded no further than the budget) and kept as uint8 frames until each tile is
        patchified."""
        if self.frame_stride != 1:
            return None
        if isinstance(sample, (str, os.PathLike)):  # a file: the guard, then uint8 frames
            x = self._read_bounded(sample)  # uint8 [3, T, H, W], each tile converted alone
        else:
            x = to_video_tensor(sample, min_side=self.min_side, frame_stride=self.frame_stride)
        span = steps * self.temporal_patch
        return [x[:, s : s + span] for s in range(0, x.shape[1], span)]

    def join_meta(self, metas: Sequence[dict[str, Any]]) -> dict[str, Any]:
        T = sum(int(m["size"][0]) for m in metas)
        _, H, W = (int(v) for v in metas[0]["size"])
        return {"size": [T, H, W], "grid": list(self.grid_of(T, H, W)), "patch": metas[0]["patch"]}

    def join_time(self, pieces: Any, meta: dict[str, Any]) -> torch.Tensor:
        T, H, W = (int(v) for v in meta["size"])
        out = None
        start = 0
        for piece in pieces:  # [3, t, H, W] each, filled into one clip buffer
            if out is None:
                out = piece.new_empty(3, T, H, W)
            out[:, start : start + piece.shape[1]] = piece
            start += piece.shape[1]
        if out is None or start != T:
            raise ModalityInputError(f"video: pieces give {start} frames, the meta says {T}")
        return out

    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        gt, gh, gw = meta["grid"]
        return int(gt), int(gh), int(gw)

    def unpatchify(
        self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]
    ) -> torch.Tensor:
        try:
            T, H, W = (int(v) for v in meta["size"])
            grid = self.grid_shape(meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModalityInputError(
                f"video: metadata lacks a valid 'size'/'grid': {meta}"
            ) from exc
        check_decode_grid(
            "video",
            (T, H, W),
            grid,
            (self.temporal_patch, self.patch_size, self.patch_size),
            tokens=values.shape[0],
            max_tokens=self.max_tokens,
        )
        self.check_values(values)
        p, pt = self.patch_size, self.temporal_patch
        gt, gh, gw = grid
        dense, _ = scatter_to_grid(values, coords, grid, layout=self.layout)  # [d, gt, gh, gw]
        dense = dense.reshape(pt, p, p, 3, gt, gh, gw)  # [pt, ph, pw, c, gt, gh, gw]
        clip = dense.permute(3, 4, 0, 5, 1, 6, 2)  # [c, gt, pt, gh, ph, gw, pw]
        clip = clip.reshape(3, gt * pt, gh * p, gw * p)  # [3, gt*pt, gh*p, gw*p]
        return clip[:, :T, :H, :W]

    def examples(self, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        shapes = [(4, 16, 16), (5, 17, 33), (1, 2, 40), (9, 20, 18)]
        return [torch.rand(3, t, h, w, generator=g) for t, h, w in shapes]

    def invalid_examples(self) -> list[Any]:
        return [
            torch.zeros(3, 0, 8, 8),  # zero frames
            [],  # zero frames as a list
            [torch.zeros(3, 8, 8), torch.zeros(3, 8, 10)],  # frames of inconsistent size
            torch.zeros(3, 2, 1, 1),  # 1-pixel frames
            torch.full((3, 2, 8, 8), float("nan")),
            torch.full((3, 2, 8, 8), 2.0),  # out of [0, 1]
            torch.zeros(2, 2, 8, 8),  # two channels
            torch.zeros(3, 8, 8),  # an image, not a clip
            torch.zeros(3, 2, 8, 8, dtype=torch.int64),
            "/nonexistent/atoken/not-a-video.mp4",
            42,
            torch.zeros(3, 4 * 16385, 16, 2, dtype=torch.uint8),  # 16385 tokens > max_tokens
        ]


@hookimpl
def register_modalities(register) -> None:
    register("video", VideoModality)
