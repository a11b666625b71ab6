"""Video files in and out: decoding with PyAV, writing MP4 and GIF.

Shapes:
    frames uint8 [T, H, W, 3] (channels-last, as decoded) and clips float32 [3, T, H, W] in [0, 1]

:func:`read_video` decodes a file (any container and codec FFmpeg reads) with PyAV, keeping
every ``frame_stride``-th frame from ``start``, at most ``max_frames`` of them, and stops
decoding as soon as it has them (a 16-frame clip of a long file costs 16 frames of work).
:func:`iter_video_frames` yields the same frames one by one (constant memory).
:func:`write_video` writes an MP4 (H.264 where FFmpeg has it, else MPEG-4 Part 2) and
:func:`write_gif` an animated GIF with Pillow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from atoken.core.errors import ModalityInputError

__all__ = [
    "VIDEO_EXTENSIONS",
    "iter_video_frames",
    "read_video",
    "stack_frames",
    "video_info",
    "write_gif",
    "write_video",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


def _open(path: str | os.PathLike):
    import av

    name = os.fspath(path)
    if not os.path.exists(name):
        raise ModalityInputError(f"video: no such file {name!r}")
    try:
        container = av.open(name)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ModalityInputError(
            f"video: {name!r} is not a readable video ({type(exc).__name__}: {exc})"
        ) from exc
    if not container.streams.video:
        container.close()
        raise ModalityInputError(f"video: {name!r} holds no video stream")
    return container


def video_info(path: str | os.PathLike) -> dict[str, float | int]:
    """``{"frames", "height", "width", "fps"}`` of a video file, from its header (``frames`` is
    0 when the container does not record it).

    Raises:
        ModalityInputError: a missing, corrupt or non-video file.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 0
        return {
            "frames": int(stream.frames or 0),
            "height": int(stream.codec_context.height),
            "width": int(stream.codec_context.width),
            "fps": float(rate),
        }
    finally:
        container.close()


def iter_video_frames(
    path: str | os.PathLike,
    *,
    start: int = 0,
    frame_stride: int = 1,
    max_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 ``[H, W, 3]`` frames ``start, start + stride, ...`` (at most ``max_frames``).

    Raises:
        ModalityInputError: a missing, corrupt or non-video file, or a bad argument.
    """
    import av

    if not isinstance(frame_stride, int) or frame_stride < 1:
        raise ModalityInputError(
            f"video: frame_stride must be a positive int, got {frame_stride!r}"
        )
    if not isinstance(start, int) or start < 0:
        raise ModalityInputError(f"video: start must be an int >= 0, got {start!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 0):
        raise ModalityInputError(f"video: max_frames must be an int >= 0, got {max_frames!r}")
    container = _open(path)
    name = os.fspath(path)
    kept = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if max_frames is not None and kept >= max_frames:
                break
            if index < start or (index - start) % frame_stride:
                continue
            yield frame.to_ndarray(format="rgb24")  # [H, W, 3]
            kept += 1
    except av.error.FFmpegError as exc:
        raise ModalityInputError(
            f"video: {name!r} could not be decoded ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        container.close()


def read_video(
    path: str | os.PathLike,
    *,
    start: int = 0,
    frame_stride: int = 1,
    max_frames: int | None = None,
) -> torch.Tensor:
    """Decode a video file to uint8 ``[3, T, H, W]`` (see :func:`iter_video_frames`).

    Raises:
        ModalityInputError: a missing, corrupt or non-video file, no frame in range, or frames
            of inconsistent size.
    """
    frames = list(
        iter_video_frames(path, start=start, frame_stride=frame_stride, max_frames=max_frames)
    )
    if not frames:
        raise ModalityInputError(f"video: {os.fspath(path)!r} gave no frames from {start}")
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise ModalityInputError(f"video: frames of inconsistent size {sorted(sizes)}")
    clip = np.stack(frames)  # [T, H, W, 3]
    return torch.from_numpy(clip).permute(3, 0, 1, 2).contiguous()  # [3, T, H, W]


def _to_uint8_frames(clip: torch.Tensor) -> np.ndarray:
    """float ``[3, T, H, W]`` in [0, 1] (or uint8) -> uint8 ``[T, H, W, 3]``."""
    if clip.ndim != 4 or clip.shape[0] != 3:
        raise ModalityInputError(f"video: expected [3, T, H, W], got {tuple(clip.shape)}")
    x = clip.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()  # [T, H, W, 3]


def write_video(
    clip: torch.Tensor, path: str | os.PathLike, *, fps: float = 8.0, quality: int = 18
) -> Path:
    """Write ``clip`` (float ``[3, T, H, W]`` in [0, 1] or uint8) as an MP4 file.

    Odd sizes are padded by one edge pixel (yuv420p needs even sides). ``quality`` is the
    H.264 CRF (lower is better).
    """
    import av

    frames = _to_uint8_frames(clip)  # [T, H, W, 3]
    T, H, W, _ = frames.shape
    if T == 0:
        raise ModalityInputError("video: cannot write a clip with zero frames")
    if H % 2 or W % 2:
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=max(1, round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(quality)}
        else:
            stream.bit_rate = 4_000_000
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_gif(clip: torch.Tensor, path: str | os.PathLike, *, fps: float = 8.0) -> Path:
    """Write ``clip`` (float ``[3, T, H, W]`` in [0, 1] or uint8) as an animated GIF."""
    from PIL import Image

    frames = _to_uint8_frames(clip)  # [T, H, W, 3]
    if frames.shape[0] == 0:
        raise ModalityInputError("video: cannot write a clip with zero frames")
    pics = [Image.fromarray(f) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pics[0].save(
        path,
        save_all=True,
        append_images=pics[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    return path


def stack_frames(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """Frames ``[3, H, W]`` of one size -> a clip ``[3, T, H, W]``.

    Raises:
        ModalityInputError: no frames, or frames of inconsistent size.
    """
    if not frames:
        raise ModalityInputError("video: a clip needs at least one frame, got zero")
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) != 1:
        raise ModalityInputError(f"video: frames of inconsistent size {sorted(sizes)}")
    return torch.stack(list(frames), dim=1)  # [3, T, H, W]
