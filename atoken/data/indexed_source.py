"""What the streaming sources share: samples read by index, an epoch order, crops, bad samples.

Shapes: a decoded image is uint8 ``[3, H, W]``; a training crop float32 ``[3, h, w]`` in [0, 1]
(``npy`` samples: the stored array, channel-first in the modality's layout, floats unscaled).

A subclass (:class:`~atoken.data.webdataset_source.WebDatasetSource`,
:class:`~atoken.data.hf_source.HFDatasetSource`) lists its samples' ``names`` and reads sample
``i`` with ``read(i)``; this base splits off the held-out samples, orders the rest with an
:class:`~atoken.data.epoch_order.EpochOrder` (seed, rank, world size, step) and crops each
sample with the generator of its global position, so ``batch(step, micro)`` depends on nothing
else and runs the same in a ``torch.utils.data`` worker as in the training process.

Bad samples: a sample that cannot be read (``BadSampleError``: truncated, undecodable, missing
its key) is left out of its batch with a warning naming the shard and key, and counted; the
count passing ``[train] max_bad_samples`` (``SourceContext.max_bad_samples``; 0: fail on the
first) fails the run with the last one's error. A bad sample is never replaced by another, so
nothing is repeated: its batch is one sample shorter. Problems found while indexing (a
truncated tar member, a missing key) count before training starts; with data workers, each
process counts the samples it decodes.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch

from atoken.core.errors import BadSampleError, ConfigError
from atoken.core.validators import non_negative_int, positive_int
from atoken.data.epoch_order import EpochOrder
from atoken.data.sampling import crop_box, to_float
from atoken.data.sources import SourceContext, split_heldout

__all__ = ["CLIP_KEYS", "IMAGE_KEYS", "IndexedSource", "decode_sample", "example_images"]

#: Sample keys (file extensions in a shard) read as images, in order of preference.
IMAGE_KEYS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "npy")
#: Sample keys decoded as clips (uint8 ``[3, T, H, W]``).
CLIP_KEYS: tuple[str, ...] = ("mp4", "webm", "mkv", "avi", "mov", "m4v")

_log = logging.getLogger("atoken")


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def _image(data: bytes, resize: int) -> torch.Tensor:
    from PIL import Image

    from atoken.data.pixels import to_image_tensor

    with Image.open(io.BytesIO(data)) as img:
        if resize and img.format == "JPEG":
            img.draft("RGB", (resize, resize))  # DCT-domain downscale: decodes less
        img.load()
        if resize:
            w, h = img.size
            scale = resize / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC)
        if img.mode == "RGB":  # numpy: one thread, no contention with the training step's
            return torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))
        x = to_image_tensor(img)  # grey repeated, alpha premultiplied: [3, H, W] in [0, 1]
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def example_images(n: int = 4, side: int = 96) -> list[tuple[str, bytes]]:
    """``n`` bundled photos as ``(name, JPEG bytes)``, centre crops of ``side`` pixels: the
    small real data of the streaming sources' contract tests."""
    from PIL import Image

    from atoken.data.images import TRAIN_PHOTOS, load_photo

    out = []
    for name in TRAIN_PHOTOS[:n]:
        x = load_photo(name)  # uint8 [3, H, W]
        H, W = x.shape[-2:]
        top, left = (H - side) // 2, (W - side) // 2
        crop = x[:, top : top + side, left : left + side].permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, "JPEG", quality=90)
        out.append((name, buf.getvalue()))
    return out


def _clip(data: bytes, ext: str, frame_stride: int) -> torch.Tensor:
    """A video file's bytes -> uint8 ``[3, T, H, W]`` (PyAV reads a file: a temporary one)."""
    import tempfile

    from atoken.data.video_io import read_video

    with tempfile.NamedTemporaryFile(suffix=f".{ext}") as f:
        f.write(data)
        f.flush()
        return read_video(f.name, frame_stride=frame_stride)


def decode_sample(
    data: bytes, ext: str, *, resize: int = 0, where: str = "", frame_stride: int = 1
) -> torch.Tensor:
    """The sample held in ``data`` (a file of extension ``ext``): an image as uint8
    ``[3, H, W]`` (the shorter side resized to ``resize`` when > 0), a video (``mp4``,
    ``webm``, ... :data:`CLIP_KEYS`) as uint8 ``[3, T, H, W]`` (every ``frame_stride``-th
    frame), an ``npy`` array as a tensor of its dtype.

    Raises:
        BadSampleError: the bytes do not decode (``where`` names the shard and key).
    """
    try:
        if ext == "npy":
            return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).copy())
        if ext in CLIP_KEYS:
            return _clip(data, ext, frame_stride)
        return _image(data, resize)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError...; all mean "bad"
        raise BadSampleError(
            f"{where}: cannot decode its {ext!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _strides(value: Any) -> tuple[int, ...]:
    """``frame_stride``: an int >= 1 or a non-empty list of them."""
    values = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        strides = tuple(values)
    except TypeError:
        strides = ()
    if not strides or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                              for v in strides):  # fmt: skip
        raise ConfigError(f"frame_stride must be an int >= 1 or a list of them, got {value!r}")
    return strides


@attrs.define(kw_only=True, slots=False)
class IndexedSource:
    """The shared parameters and the batch of an indexed source (see the module docstring).

    ``resize``: the shorter side of each image is resized to this many pixels before the crop
    (0: native scale, as the folder sources); ``shuffle``: a fresh permutation per epoch.
    Clips: ``frames`` (> 0) frames at a random start, drawn from the sample's generator like
    its crop (a clip with fewer frames is a bad sample); ``frame_stride``: every n-th frame is
    decoded, or a list (``[1, 2, 3]``, the paper's strides): each training clip takes one of
    them, drawn like its start. ``frames = 0`` keeps whole clips.
    """

    context: SourceContext = attrs.field(factory=SourceContext)
    batch_size: int = attrs.field(default=8, validator=positive_int)
    crop_min: int = attrs.field(default=64, validator=positive_int)
    crop_max: int = attrs.field(default=256, validator=positive_int)
    resize: int = attrs.field(default=0, validator=non_negative_int)
    shuffle: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    heldout_choice: tuple[str, ...] = attrs.field(default=(), converter=_names, alias="heldout")
    frames: int = attrs.field(default=0, validator=non_negative_int)
    frame_stride: tuple[int, ...] = attrs.field(default=(1,), converter=_strides)

    modality: str = attrs.field(init=False, default="image")
    names: tuple[str, ...] = attrs.field(init=False, default=())
    heldout: list[torch.Tensor] = attrs.field(init=False, factory=list)
    heldout_names: tuple[str, ...] = attrs.field(init=False, default=())
    train: list[int] = attrs.field(init=False, factory=list)
    order: EpochOrder = attrs.field(init=False, default=None)
    bad: int = attrs.field(init=False, default=0)  # bad samples seen by this process

    @property
    def decode_stride(self) -> int:
        """The stride clips are decoded at: ``frame_stride`` when it is one, else every frame
        (each clip then draws its stride)."""
        return self.frame_stride[0] if len(self.frame_stride) == 1 else 1

    # ------------------------------------------------------------------ for subclasses
    def read(self, index: int) -> torch.Tensor:
        """Sample ``index`` of :attr:`names`, decoded (uint8 image or npy array).

        Raises:
            BadSampleError: it cannot be read or decoded.
        """
        raise NotImplementedError

    def _split(self, names: Sequence[str], where: str) -> None:
        """Set the names, the held-out samples (decoded now) and the training order."""
        if self.crop_min > self.crop_max:
            raise ConfigError(f"crop_min ({self.crop_min}) > crop_max ({self.crop_max})")
        self.names = tuple(names)
        train, held = split_heldout(self.names, self.heldout_choice, where)
        self.train = train
        c = self.context
        self.order = EpochOrder(
            len(train),
            batch_size=self.batch_size,
            seed=c.seed,
            rank=c.rank,
            world_size=c.world_size,
            micro_steps=c.micro_steps,
            shuffle=self.shuffle,
        )
        self.heldout_names = tuple(self.names[i] for i in held)
        self.heldout = [to_float(self.read(i)) for i in held]
        if getattr(self, "caption_key", ""):  # a CaptionedSource: per-sample captions
            self.captions = tuple(self.caption(i) for i in held)  # the held-out ones, [K]
            self.heldout_labels = torch.arange(len(held))  # [K]: each its own caption

    def skip(self, exc: BadSampleError) -> None:
        """Count a bad sample: warn, or fail once more than ``max_bad_samples`` were seen."""
        self.bad += 1
        limit = self.context.max_bad_samples
        if self.bad > limit:
            raise BadSampleError(
                f"{exc} ({self.bad} bad samples, more than [train] max_bad_samples = {limit})",
                shard=exc.shard,
                key=exc.key,
            ) from exc
        _log.warning("skipped bad sample %d of at most %d: %s", self.bad, limit, exc)

    # ------------------------------------------------------------------ training
    def _window(self, x: torch.Tensor, g: torch.Generator, where: str) -> torch.Tensor:
        """A clip's ``frames`` frames at a random start (``x [3, T, H, W]``); others as they
        are.

        Raises:
            BadSampleError: a clip with fewer than ``frames`` frames.
        """
        if x.ndim != 4 or not self.frames:
            return x
        T = x.shape[1]
        step = 1  # one stride: already decoded at it
        if len(self.frame_stride) > 1:  # decoded whole: draw the clip's stride
            step = self.frame_stride[int(torch.randint(len(self.frame_stride), (), generator=g))]
        span = (self.frames - 1) * step + 1  # frames the window covers
        if span > T:
            raise BadSampleError(
                f"{where}: a clip of {T} frames, fewer than frames = {self.frames} at stride {step}"
            )
        start = int(torch.randint(0, T - span + 1, (), generator=g))
        return x[:, start : start + span : step]  # [3, frames, H, W]

    def _crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        H, W = x.shape[-2:]
        rand = lambda lo, hi: int(torch.randint(lo, hi, (), generator=g))  # noqa: E731
        top, left, h, w = crop_box(H, W, self.crop_min, self.crop_max, rand)
        crop = x[..., top : top + h, left : left + w]  # [..., h, w]
        if crop.dtype != torch.uint8:
            return to_float(crop)
        # x / 255 in numpy (one thread; IEEE division, so the values of to_float's)
        return torch.from_numpy(np.divide(crop.numpy(), np.float32(255), dtype=np.float32))

    def data_position(self, step: int) -> int:
        """The samples drawn over all ranks before ``step`` (what a checkpoint records)."""
        return self.order.consumed(step)

    def resume_data(self, step: int, position: int) -> None:
        """Go on from ``position`` at ``step`` (a checkpoint's :meth:`data_position`), on any
        number of processes."""
        self.order.rebase(step, position)

    def caption(self, index: int) -> str:
        """The caption of sample ``index`` ("" where the source has none)."""
        return ""

    def labelled_batch(
        self, step: int, micro: int = 0
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
        """``(samples, labels [B], texts [B])`` of ``(step, micro)``: each sample with its own
        caption (``caption_key``), read here, so in a data worker when there are workers;
        ``labels`` are the samples' indices into :attr:`names`. A bad sample is left out with
        its caption.

        Raises:
            ConfigError: the source has no ``caption_key``.
        """
        if not getattr(self, "caption_key", ""):
            raise ConfigError("this source has no captions: set caption_key (e.g. 'txt')")
        kept: list[int] = []
        samples = self._batch(step, micro, kept)
        texts = [self.caption(i) for i in kept]
        return samples, torch.tensor(kept, dtype=torch.long), texts

    def sample_indices(self, step: int, micro: int) -> list[int]:
        """The indices (into :attr:`names`) of batch ``(step, micro)`` on this rank."""
        return [self.train[self.order.sample(g)] for g in self.order.positions(step, micro)]

    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        """Up to ``batch_size`` float32 crops of this rank's samples at ``(step, micro)``
        (fewer when bad samples were skipped).

        Raises:
            BadSampleError: more bad samples than allowed, or a batch of bad samples only.
        """
        return self._batch(step, micro, [])

    def _batch(self, step: int, micro: int, kept: list[int]) -> list[torch.Tensor]:
        """:meth:`batch`, appending the index of every sample it keeps to ``kept``."""
        out = []
        for g in self.order.positions(step, micro):
            index = self.train[self.order.sample(g)]
            gen = self.order.generator(g)  # the sample's window (clips) and crop
            try:
                x = self._window(self.read(index), gen, self.names[index])
            except BadSampleError as exc:
                self.skip(exc)
                continue
            out.append(self._crop(x, gen))
            kept.append(index)
        if not out:
            raise BadSampleError(f"every sample of batch (step {step}, micro {micro}) is bad")
        return out
