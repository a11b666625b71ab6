"""Training data from a media store: a map-style torch dataset with epochs, DDP shards and crops.

Shapes: a stored image is uint8 ``[H, W, 3]``; ``ZarrDataset[i]`` is float32 ``[3, h, w]`` in
[0, 1] (a random crop, or the whole image; a float16/float32 store's values are not scaled);
:class:`ZarrImages` gives uint8 ``[3, H, W]``.

:class:`ZarrSamples` reads whole samples of any store as float32, channel-first: the stored
``C`` axis moves to the front (images ``[H, W, C]`` -> ``[C, H, W]``, videos ``[T, H, W, C]``
-> ``[C, T, H, W]``), axes of a store without ``C`` keep their order (depth ``[H, W]``);
uint8 values are scaled to [0, 1], float values are returned unchanged.

Order and sharding. Epoch e visits the permutation ``P_e`` of the n samples drawn from
``(seed, e)`` (identity without ``shuffle``). Rank r of w takes ``P_e[r::w]``, so the ranks'
shares are disjoint and together cover the epoch, and no sample is read twice in an epoch.
When w does not divide n, ``drop_last=True`` (the default) first drops the last ``n % w``
entries of ``P_e`` so every rank has ``n // w`` samples (equal lengths keep DDP collectives in
step; a different permutation each epoch drops different samples); ``drop_last=False`` keeps
them, and ranks then differ by at most one sample (use DDP's ``join`` context).

Crops are drawn from ``(seed, epoch, position in P_e)``: a read gets the same crop whichever
worker performs it, and a sample listed twice in ``indices`` gets two different crops.

Store handles open lazily, once per process, and are never pickled, so the dataset is safe to
hand to a ``DataLoader`` with workers. A loader copies the dataset into its workers when an
epoch's iterator starts: call :meth:`ZarrDataset.set_epoch` before iterating, and do not use
``persistent_workers=True`` (its workers would keep the epoch they started with).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from atoken.core.errors import ConfigError, StoreError
from atoken.data.sampling import crop_box
from atoken.data.storage import StoreLike, store_label
from atoken.data.store import MediaStore

__all__ = ["ZarrDataset", "ZarrImages", "ZarrSamples", "collate_list", "is_store_url"]

_IMAGE_AXES = ("H", "W", "C")


def is_store_url(source: str) -> bool:
    """True when a ``[data] source`` names a zarr store rather than a folder of files."""
    return (
        "://" in source
        or source.rstrip("/").endswith(".zarr")
        or (os.path.isfile(os.path.join(source, "zarr.json")))
    )


def collate_list(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """A ``DataLoader`` ``collate_fn`` for crops of different sizes: the list as is."""
    return list(batch)


def _crop_range(crop: int | Sequence[int] | None) -> tuple[int, int] | None:
    if crop is None:
        return None
    lo, hi = (crop, crop) if isinstance(crop, int) else tuple(crop)
    if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 1 or lo > hi:
        raise ConfigError(f"crop must be None, a size or (min, max) with 1 <= min <= max: {crop!r}")
    return lo, hi


class _LazyStore:
    """A :class:`MediaStore` opened on first use in each process, dropped when pickled."""

    def __init__(self, url: StoreLike, storage_options: Mapping[str, Any] | None) -> None:
        self.url, self.storage_options = url, dict(storage_options or {})
        self._store: MediaStore | None = None
        self._pid = -1

    @property
    def store(self) -> MediaStore:
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid = MediaStore(self.url, self.storage_options), os.getpid()
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_pid": -1}


def _require_images(store: MediaStore, reader: str, *, uint8: bool = False) -> None:
    """Raise unless ``store`` holds ``(H, W, C)`` images (of uint8 when ``uint8``)."""
    if store.sample_axes != _IMAGE_AXES or (uint8 and store.dtype != np.uint8):
        need = "uint8 " if uint8 else ""
        raise StoreError(
            f"holds {store.modality} samples {list(store.sample_axes)} of {store.dtype.name}; "
            f"{reader} reads {need}images {list(_IMAGE_AXES)} (use ZarrSamples)",
            store=store.url,
        )


def _select(indices: Sequence[int] | None, n: int, url: str) -> np.ndarray:
    """``indices`` (default: all n) as int64, each checked to lie in ``[0, n)``."""
    out = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    if out.size and (out.min() < 0 or out.max() >= n):
        raise ConfigError(f"indices must lie in [0, {n}) for {url}")
    return out


def _as_float32(values: np.ndarray) -> np.ndarray:
    """float32 values, uint8 scaled to [0, 1] (a fresh, writable array)."""
    x = np.array(values, dtype=np.float32, order="C")
    if values.dtype == np.uint8:
        x /= np.float32(255)
    return x


class ZarrDataset(Dataset):
    """A media store as a map-style dataset of random crops (see the module docstring).

    Args:
        url: the store (a path, ``file://``, ``memory://``, ``s3://``... URL).
        storage_options: fsspec options for the URL (e.g. ``endpoint_url``, ``key``).
        crop: ``None`` for whole images, a side ``s`` for ``s x s`` crops, or ``(min, max)``
            for a height and a width drawn independently from ``[min, max]``; sides are capped
            by the image (the crop sampler's rule).
        seed, shuffle: the epoch permutation's seed, or store order without shuffling.
        rank, world_size, drop_last: the DDP shard and the policy when w does not divide n.
        indices: the store samples to use (default: all committed when created).
        verify: check each sample's checksum (reads whole images; ``False`` reads only the
            rows a crop needs).

    Raises:
        StoreError (and subclasses): the store is missing, of another schema, damaged, or
            holds samples other than ``(H, W, C)`` images.
        ConfigError: invalid crop, rank, world size or indices.
    """

    def __init__(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        crop: int | Sequence[int] | None = (64, 256),
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        indices: Sequence[int] | None = None,
        verify: bool = True,
    ) -> None:
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, {world_size=}")
        self.url = store_label(url)
        self.crop = _crop_range(crop)
        self.seed, self.shuffle, self.verify = int(seed), bool(shuffle), bool(verify)
        self.rank, self.world_size, self.drop_last = rank, world_size, bool(drop_last)
        self._lazy = _LazyStore(url, storage_options)
        _require_images(self._lazy.store, "ZarrDataset")
        self.indices = _select(indices, len(self._lazy.store), self.url)
        self.epoch = 0
        self._order: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and crops the following reads use."""
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """The store indices this rank reads in ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._order is not None and self._order[0] == epoch:
            return self._order[1]
        n, w = len(self.indices), self.world_size
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(n)
        else:
            perm = np.arange(n)
        if self.drop_last:
            perm = perm[: n - n % w]
        order = self.indices[perm[self.rank :: w]]
        self._order = (epoch, order)
        return order

    @property
    def names(self) -> tuple[str, ...]:
        """Source names of all store samples (index with :meth:`epoch_indices`)."""
        return self._lazy.store.names

    def __len__(self) -> int:
        n, w = len(self.indices), self.world_size
        return n // w if self.drop_last else len(range(self.rank, n, w))

    def __getitem__(self, i: int) -> torch.Tensor:
        order = self.epoch_indices()
        if not -len(order) <= i < len(order):
            raise IndexError(f"index {i} out of range for {len(order)} samples on rank {self.rank}")
        i = i % len(order)
        return self._load(int(order[i]), self.rank + i * self.world_size)

    def read(self, index: int) -> torch.Tensor:
        """Store sample ``index`` with a crop drawn from ``(seed, epoch, index)``:
        float32 ``[3, h, w]``."""
        return self._load(int(index), int(index))

    def _load(self, index: int, key: int) -> torch.Tensor:
        store = self._lazy.store
        H, W, _ = store.shape(index)
        if self.crop is None:
            top, left, h, w = 0, 0, H, W
        else:
            g = np.random.default_rng([self.seed, self.epoch, key])
            lo, hi = self.crop  # type: ignore[misc]
            top, left, h, w = crop_box(H, W, lo, hi, lambda a, b: int(g.integers(a, b)))
        if self.verify:
            pixels = store.read(index, verify=True)[top : top + h, left : left + w]
        else:
            pixels = store.read_rows(index, top, top + h)[:, left : left + w]
        # in numpy: torch's intra-op threads make small conversions slow on a busy CPU
        return torch.from_numpy(_as_float32(pixels.transpose(2, 0, 1)))  # [3, h, w]


class ZarrImages(Sequence):
    """Whole images of a media store as uint8 ``[3, H, W]`` tensors (e.g. for
    :class:`~atoken.data.CropSampler`); ``indices`` selects a subset, ``names`` are theirs.

    Raises:
        StoreError: the store does not hold uint8 ``(H, W, C)`` images (use ZarrSamples).
    """

    def __init__(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        indices: Sequence[int] | None = None,
    ) -> None:
        self._lazy = _LazyStore(url, storage_options)
        store = self._lazy.store
        _require_images(store, "ZarrImages", uint8=True)
        self.indices = list(range(len(store))) if indices is None else [int(i) for i in indices]
        self.names = tuple(store.names[i] for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        pixels = self._lazy.store.read(self.indices[i], verify=True)  # [H, W, 3]
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # [3, H, W]


class ZarrSamples(Sequence):
    """Whole samples of any media store as float32 channel-first tensors (see the module
    docstring); ``indices`` selects a subset, ``names`` are theirs.

    ``self[i]`` reads the whole sample and checks its checksum; :meth:`window` reads only the
    rows of the first stored axis it needs (a clip of a video) and has no checksum to check.

    Raises:
        StoreError (and subclasses): the store is missing, of another schema, or damaged.
        ConfigError: an index outside the store.
    """

    def __init__(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.url = store_label(url)
        self._lazy = _LazyStore(url, storage_options)
        store = self._lazy.store
        self.indices = [int(i) for i in _select(indices, len(store), self.url)]
        self.names: tuple[str, ...] = tuple(store.names[i] for i in self.indices)
        self.modality: str = store.modality
        self.dtype: np.dtype = store.dtype
        self.sample_axes: tuple[str, ...] = store.sample_axes
        stored = self.sample_axes
        self._channel = stored.index("C") if "C" in stored else None
        # the axes of the returned tensors: C first, the others in stored order
        self.axes: tuple[str, ...] = (
            stored if self._channel is None else ("C", *(a for a in stored if a != "C"))
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        values = self._lazy.store.read(self.indices[i], verify=True)  # e.g. [T, H, W, C]
        return self._tensor(values)  # e.g. [C, T, H, W]

    def length(self, i: int) -> int:
        """The length of sample ``i``'s first stored axis (``T`` for a video)."""
        shape = self._lazy.store.shape(self.indices[i])
        if not shape:
            raise ConfigError(f"{self.names[i]!r} in {self.url} has no axes to measure")
        return shape[0]

    def window(self, i: int, start: int, stop: int, stride: int = 1) -> torch.Tensor:
        """Rows ``start:stop:stride`` of sample ``i``'s first stored axis, converted as
        ``self[i]`` is (a video gives ``[C, t, H, W]``); ``stop`` past the end is clipped.

        Raises:
            ConfigError: a negative ``start`` or ``stop``, or a ``stride`` below 1.
        """
        if not (isinstance(stride, int) and stride >= 1) or min(int(start), int(stop)) < 0:
            raise ConfigError(
                f"need start, stop >= 0 and an int stride >= 1, got {start=}, {stop=}, {stride=}"
            )
        rows = self._lazy.store.read_rows(self.indices[i], start, stop)[::stride]
        return self._tensor(rows)

    def _tensor(self, values: np.ndarray) -> torch.Tensor:
        if self._channel is not None:
            values = np.moveaxis(values, self._channel, 0)  # [C, ...]
        return torch.from_numpy(_as_float32(values))  # in numpy: see ZarrDataset._load
