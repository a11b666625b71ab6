"""Clips from anything a user holds: float32 ``[3, T, H, W]`` in [0, 1], the video
modality's canonical form.

Input conversion (the image modality's rules applied to every frame):
    * a torch tensor ``[C, T, H, W]`` (channels-first, C in 1, 3, 4) of uint8 or float in [0, 1];
    * a numpy array ``[T, H, W, C]`` (channels-last, as decoders give it);
    * a list of frames (anything the image modality accepts), which must share one size;
    * a ``str`` or ``os.PathLike``: a video file decoded with PyAV.
    ``frame_stride`` keeps every s-th frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from atoken.core.errors import ModalityInputError
from atoken.data.pixels import to_image_tensor
from atoken.data.video_io import read_video, stack_frames

__all__ = ["to_video_tensor"]


def _as_video_error(exc: ModalityInputError) -> ModalityInputError:
    text = str(exc)
    return ModalityInputError("video: " + (text[7:] if text.startswith("image: ") else text))


def _from_channels_first(x: torch.Tensor, min_side: int) -> torch.Tensor:
    """``[C, T, H, W]`` -> float32 ``[3, T, H, W]`` with the image modality's conversions."""
    C, T, H, W = x.shape
    if T == 0:
        raise ModalityInputError("video: the clip has zero frames")
    try:
        # The image rules (dtype, range, NaN, grayscale, alpha) on all frames at once.
        flat = to_image_tensor(x.reshape(C, T * H, W), min_side=1)  # [3, T*H, W]
    except ModalityInputError as exc:
        raise _as_video_error(exc) from exc
    if min(H, W) < min_side:
        raise ModalityInputError(
            f"video: frame size {H}x{W} is too small; each side needs at least {min_side} pixels"
        )
    return flat.reshape(3, T, H, W)


def to_video_tensor(sample: Any, *, min_side: int = 2, frame_stride: int = 1) -> torch.Tensor:
    """Convert a clip tensor, array, list of frames or video file to float32 ``[3, T, H, W]``.

    Raises:
        ModalityInputError: an unsupported type, shape, dtype or range, a NaN, zero frames,
            frames of inconsistent size, a corrupt or non-video file, or a side shorter than
            ``min_side`` pixels.
    """
    if not isinstance(frame_stride, int) or frame_stride < 1:
        raise ModalityInputError(
            f"video: frame_stride must be a positive int, got {frame_stride!r}"
        )
    if isinstance(sample, (str, os.PathLike)):
        clip = read_video(sample, frame_stride=frame_stride)  # uint8 [3, T, H, W]
        return _from_channels_first(clip, min_side)
    if isinstance(sample, torch.Tensor):
        if sample.ndim != 4:
            raise ModalityInputError(
                f"video: a clip tensor must be [C, T, H, W], got {tuple(sample.shape)}"
            )
        x = sample.detach().cpu()
    elif isinstance(sample, np.ndarray):
        if sample.ndim != 4:
            raise ModalityInputError(
                f"video: a clip array must be [T, H, W, C], got {tuple(sample.shape)}"
            )
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(sample, -1, 0)))  # [C, T, H, W]
    elif isinstance(sample, Sequence) and not isinstance(sample, (bytes, bytearray)):
        try:
            frames = [to_image_tensor(f, min_side=min_side) for f in sample]
        except ModalityInputError as exc:
            raise _as_video_error(exc) from exc
        x = stack_frames(frames)  # [3, T, H, W]
    else:
        raise ModalityInputError(
            f"video: unsupported sample type {type(sample).__name__}; pass a [C, T, H, W] "
            "tensor, a [T, H, W, C] array, a list of frames or a video file path"
        )
    return _from_channels_first(x[:, ::frame_stride], min_side)
