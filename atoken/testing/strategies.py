"""Hypothesis strategies for atoken's data types, shipped for plugin and test authors.

Every strategy is keyword-only, bounded, includes the empty cases (zero tokens, zero samples)
unless asked not to, and draws all of its randomness from Hypothesis so failures shrink.
A misused argument raises Hypothesis's ``InvalidArgument``.

    from hypothesis import given
    from atoken.testing.strategies import sparse_latents

    @given(sparse_latents(max_samples=4, channels=8, axes="xyz"))
    def test_pack_unpack(latent): ...

This module holds the strategies of the data types (coordinates, latents, pixels) and
re-exports the others, so every strategy imports from here:

* :mod:`atoken.testing.geometry_strategies`: ``meshes``, ``voxels``, ``occupancy_grids``,
  ``gaussian_sets`` (3D samples);
* :mod:`atoken.testing.tokenizer_strategies`: ``modality_examples``, ``decodable_latents``,
  ``mixed_batches``, ``tiling_plans`` (:class:`TilingPlan`), ``fsq_levels`` (what a
  tokenizer takes).
"""

from __future__ import annotations

from collections.abc import Sequence

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from atoken.core.coords import LAYOUTS
from atoken.core.latent import SparseLatent
from atoken.testing.geometry_strategies import gaussian_sets, meshes, occupancy_grids, voxels
from atoken.testing.tokenizer_strategies import (
    TilingPlan,
    decodable_latents,
    fsq_levels,
    mixed_batches,
    modality_examples,
    tiling_plans,
)

__all__ = [
    "TilingPlan",
    "coords4d",
    "decodable_latents",
    "fsq_levels",
    "gaussian_sets",
    "images",
    "meshes",
    "mixed_batches",
    "modality_examples",
    "occupancy_grids",
    "register_profiles",
    "seqlens",
    "sparse_latents",
    "tiling_plans",
    "videos",
    "voxels",
]


def register_profiles() -> None:
    """Register the Hypothesis profiles ``default``, ``ci`` (derandomized) and ``nightly``."""
    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("default", max_examples=40, **common)
    settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True, **common)
    settings.register_profile("nightly", max_examples=1000, **common)


@st.composite
def coords4d(
    draw: st.DrawFn,
    *,
    min_size: int = 0,
    max_size: int = 32,
    max_coord: int = 8,
    axes: str | Sequence[int] = (0, 1, 2, 3),
) -> torch.Tensor:
    """Unique int32 coordinates ``[n, 4]`` of (t, x, y, z); columns not in ``axes`` are zero.

    ``axes``: the columns in use, as indices or as a grid layout of
    :data:`atoken.core.coords.LAYOUTS` (``"thw"``: t, x, y; ``"xyz"``: x, y, z).
    ``max_coord`` bounds each used column to ``[0, max_coord)``, so the coordinates lie in the
    layout's grid ``(max_coord,) * 3``.
    """
    columns = _columns(axes)
    capacity = max_coord ** len(columns)
    hi = min(max_size, capacity)
    point = st.tuples(*(st.integers(0, max_coord - 1) for _ in columns))
    points = draw(st.lists(point, min_size=min(min_size, hi), max_size=hi, unique=True))
    coords = torch.zeros(len(points), 4, dtype=torch.int32)  # [n, 4]
    if points:
        coords[:, list(columns)] = torch.tensor(points, dtype=torch.int32)
    return coords


def _columns(axes: str | Sequence[int]) -> tuple[int, ...]:
    """The coordinate columns ``axes`` names: a layout's (``"xyz"`` -> ``(1, 2, 3)``), or the
    given indices, checked (distinct, in 0..3)."""
    if isinstance(axes, str):
        if axes not in LAYOUTS:
            raise InvalidArgument(f"axes={axes!r}: expected a layout of {sorted(LAYOUTS)}")
        return tuple(sorted(LAYOUTS[axes]))
    columns = tuple(axes)
    if not columns or len(set(columns)) != len(columns) or not set(columns) <= {0, 1, 2, 3}:
        raise InvalidArgument(f"axes={axes!r}: expected distinct columns of 0..3 (t, x, y, z)")
    return columns


@st.composite
def seqlens(
    draw: st.DrawFn, *, min_samples: int = 0, max_samples: int = 6, max_len: int = 16
) -> torch.Tensor:
    """Per-sample token counts: int64 ``[B]`` with zero-length samples allowed."""
    lens = draw(st.lists(st.integers(0, max_len), min_size=min_samples, max_size=max_samples))
    return torch.tensor(lens, dtype=torch.int64)


_finite32 = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def sparse_latents(
    draw: st.DrawFn,
    *,
    min_samples: int = 0,
    max_samples: int = 5,
    max_len: int = 12,
    channels: int | None = None,
    max_coord: int = 6,
    axes: str | Sequence[int] = (0, 1, 2, 3),
    modalities: Sequence[str] = ("alpha", "beta"),
    dtype: torch.dtype = torch.float32,
) -> SparseLatent:
    """A valid :class:`SparseLatent` with ragged samples (empty ones included); sample ``b``'s
    meta is ``{"index": b}``.

    Args:
        axes: the coordinate columns in use (see :func:`coords4d`): a layout, ``"thw"`` or
            ``"xyz"``, puts every sample in that layout's grid ``(max_coord,) * 3`` (what
            :func:`atoken.core.coords.scatter_to_grid` takes); the default uses all four.
        modalities: the names drawn per sample; the default ``("alpha", "beta")`` are
            placeholders of no plugin (pass your modality's name).
    """
    columns = _columns(axes)
    if not modalities or not all(isinstance(m, str) and m for m in modalities):
        raise InvalidArgument(f"modalities={modalities!r}: expected non-empty names")
    C = draw(st.integers(1, 8)) if channels is None else channels
    B = draw(st.integers(min_samples, max_samples))
    parts = [draw(coords4d(max_size=max_len, max_coord=max_coord, axes=columns)) for _ in range(B)]
    N = sum(p.shape[0] for p in parts)
    feats = draw(hnp.arrays(np.float32, (N, C), elements=_finite32))
    names = [draw(st.sampled_from(list(modalities))) for _ in range(B)]
    meta = [{"index": b} for b in range(B)]
    coords = torch.cat(parts) if parts else torch.zeros(0, 4, dtype=torch.int32)
    return SparseLatent(
        torch.from_numpy(feats).to(dtype),
        coords,
        torch.tensor([p.shape[0] for p in parts], dtype=torch.int64),
        modality=names,
        meta=meta,
    )


@st.composite
def images(
    draw: st.DrawFn,
    *,
    min_side: int = 2,
    max_side: int = 48,
    channels: int = 3,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A channels-first image ``[channels, H, W]``: float in [0, 1] or uint8."""
    H = draw(st.integers(min_side, max_side))
    W = draw(st.integers(min_side, max_side))
    return _pixels(draw, (channels, H, W), dtype)


@st.composite
def videos(
    draw: st.DrawFn,
    *,
    max_frames: int = 9,
    min_side: int = 2,
    max_side: int = 32,
    dtype: torch.dtype = torch.float32,
    min_frames: int = 1,
) -> torch.Tensor:
    """A clip ``[3, T, H, W]`` of ``T`` in ``[min_frames, max_frames]``: float in [0, 1] or
    uint8."""
    T = draw(st.integers(min_frames, max_frames))
    H = draw(st.integers(min_side, max_side))
    W = draw(st.integers(min_side, max_side))
    return _pixels(draw, (3, T, H, W), dtype)


def _pixels(draw: st.DrawFn, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        arr = draw(hnp.arrays(np.uint8, shape))
    elif dtype.is_floating_point:
        unit = st.floats(0.0, 1.0, allow_nan=False, width=32)
        arr = draw(hnp.arrays(np.float32, shape, elements=unit))
    else:
        raise TypeError(f"pixels must be uint8 or float, got {dtype}")
    return torch.from_numpy(arr).to(dtype)
