"""Crop and clip sampling, written once: the deterministic training batches of every source.

Shapes: a sample is channel-first with its two spatial axes last, ``[..., H, W]`` (an image
``[3, H, W]``, a depth map ``[H, W]``, a video ``[3, T, H, W]``). A draw picks a sample, then,
with ``frames > 0``, a window of ``frames`` steps every ``stride`` along ``time_dim``, then a
spatial crop ``h x w`` with each side drawn from ``[crop_min, crop_max]`` (capped by the
sample). No resizing: crops keep native scale and aspect. uint8 samples become float32 in
[0, 1] (``x / 255``); float samples are returned as float32, unscaled (metres, coordinates).

Determinism: the batch of ``(step, micro)`` is a function of ``(seed, rank, step, micro)``
only, so a resumed run sees the same batches. Rank ``r`` of ``w`` draws only from the samples
``r, r + w, r + 2w, ...`` (disjoint shares; rank 0 of 1 sees everything).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from atoken.core.errors import ConfigError

__all__ = ["WindowSampler", "crop_box", "to_float", "window_of"]


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; any float dtype -> float32 unchanged."""
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def crop_box(
    H: int, W: int, crop_min: int, crop_max: int, randint: Callable[[int, int], int]
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop of an ``H x W`` sample: each side drawn in
    ``[crop_min, crop_max]`` capped by the sample, then the corner; ``randint(lo, hi)`` draws
    an int in ``[lo, hi)`` from the caller's generator (torch or numpy), in that order."""

    def side(limit: int) -> int:
        hi = min(crop_max, limit)
        return randint(min(crop_min, hi), hi + 1)

    h, w = side(H), side(W)
    return randint(0, H - h + 1), randint(0, W - w + 1), h, w


def window_of(items: Any, i: int, start: int, stop: int, stride: int, time_dim: int) -> Any:
    """Steps ``start:stop:stride`` along ``time_dim`` of sample ``i``, read through
    ``items.window`` when the source has it (reading only those steps), else sliced."""
    if hasattr(items, "window"):
        return items.window(i, start, stop, stride)
    index = [slice(None)] * (time_dim + 1)
    index[time_dim] = slice(start, stop, stride)
    return items[i][tuple(index)]


def _positive_int(label: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label} must be a positive int, got {value!r}")


class WindowSampler:
    """Deterministic random crops (``frames = 0``) or clips (``frames > 0``) of ``items``.

    Args:
        items: a sequence of samples ``[..., H, W]``; for clips, ``length(i)`` (steps of
            sample ``i`` along ``time_dim``) and optionally ``window(i, start, stop, stride)``.
        batch_size: samples per batch.
        crop_min, crop_max: the range of each crop side.
        frames: steps per clip (0: no time window).
        strides: clip strides to draw from (reduced when a sample is too short).
        time_dim: the time axis of a sample (1 for ``[C, T, H, W]``).
        seed, rank, world_size: the run's seed and this process's share of ``items``.

    Raises:
        ConfigError: no samples (for this rank), or invalid sizes.
    """

    def __init__(
        self,
        items: Sequence[Any],
        *,
        batch_size: int,
        crop_min: int,
        crop_max: int,
        frames: int = 0,
        strides: Sequence[int] = (1,),
        time_dim: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        for label, value in (("batch_size", batch_size), ("crop_min", crop_min)):
            _positive_int(label, value)
        strides = tuple(strides)
        for s in strides:
            _positive_int("strides", s)
        if not strides:
            raise ConfigError("strides must name at least one stride")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
            raise ConfigError(f"frames must be an int >= 0, got {frames!r}")
        if crop_min > crop_max:
            raise ConfigError(f"crop_min ({crop_min}) > crop_max ({crop_max})")
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, {world_size=}")
        self.items = items
        self.shard = list(range(rank, len(items), world_size))  # this rank's sample indices
        if not self.shard:
            raise ConfigError(
                f"the training source holds no samples for rank {rank} of {world_size} "
                f"({len(items)} in all)"
            )
        self.batch_size, self.frames, self.strides = batch_size, frames, strides
        self.crop_min, self.crop_max, self.time_dim = crop_min, crop_max, time_dim
        self.seed, self.rank = seed, rank

    def generator(self, step: int, micro: int) -> torch.Generator:
        """The generator of batch ``(step, micro)`` on this rank."""
        base = (self.seed * 7_919 + step) * 131 + micro
        return torch.Generator().manual_seed(base + self.rank * 1_000_000_007)

    def _pick(self, g: torch.Generator) -> int:
        return self.shard[int(torch.randint(len(self.shard), (), generator=g))]

    @staticmethod
    def _randint(g: torch.Generator) -> Callable[[int, int], int]:
        return lambda lo, hi: int(torch.randint(lo, hi, (), generator=g))

    def _crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        H, W = x.shape[-2:]
        top, left, h, w = crop_box(H, W, self.crop_min, self.crop_max, self._randint(g))
        return to_float(x[..., top : top + h, left : left + w])  # [..., h, w]

    def draw(self, g: torch.Generator) -> tuple[int, int, int, int, int, int, int]:
        """One clip's ``(sample, start, stride, top, left, h, w)`` (``frames > 0``)."""
        i = self._pick(g)
        T = int(self.items.length(i))
        stride = self.strides[int(torch.randint(len(self.strides), (), generator=g))]
        stride = max(1, min(stride, (T - 1) // max(self.frames - 1, 1) or 1))
        span = min(T, (self.frames - 1) * stride + 1)
        start = int(torch.randint(T - span + 1, (), generator=g))
        H, W = window_of(self.items, i, 0, 1, 1, self.time_dim).shape[-2:]
        top, left, h, w = crop_box(H, W, self.crop_min, self.crop_max, self._randint(g))
        return i, start, stride, top, left, h, w

    def _clip(self, g: torch.Generator) -> tuple[torch.Tensor, int]:
        i, start, stride, top, left, h, w = self.draw(g)
        stop = start + (self.frames - 1) * stride + 1
        clip = window_of(self.items, i, start, stop, stride, self.time_dim)  # [C, t, H, W]
        return to_float(clip[..., top : top + h, left : left + w]), i  # [C, t, h, w]

    def _one(self, g: torch.Generator) -> tuple[torch.Tensor, int]:
        if self.frames:
            return self._clip(g)
        i = self._pick(g)
        return self._crop(self.items[i], g), i

    def indexed_batch(self, step: int, micro: int = 0) -> tuple[list[torch.Tensor], list[int]]:
        """:meth:`batch` and the index into ``items`` of each crop's sample."""
        g = self.generator(step, micro)
        pairs = [self._one(g) for _ in range(self.batch_size)]
        return [x for x, _ in pairs], [i for _, i in pairs]

    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        """``batch_size`` float32 crops (or clips) of this rank's samples."""
        return self.indexed_batch(step, micro)[0]
