"""Hypothesis strategies for atoken's data types, shipped for plugin and test authors.

Every strategy is keyword-only, bounded, includes the empty cases (zero tokens, zero samples)
unless asked not to, and draws all of its randomness from Hypothesis so failures shrink.

    from hypothesis import given
    from atoken.testing.strategies import sparse_latents

    @given(sparse_latents(max_samples=4, channels=8))
    def test_pack_unpack(latent): ...
"""

from __future__ import annotations

from collections.abc import Sequence

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from atoken.core.latent import SparseLatent

__all__ = [
    "coords4d",
    "gaussian_sets",
    "images",
    "register_profiles",
    "seqlens",
    "sparse_latents",
    "videos",
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
    axes: Sequence[int] = (0, 1, 2, 3),
) -> torch.Tensor:
    """Unique int32 coordinates ``[n, 4]``; columns not in ``axes`` are zero.

    ``max_coord`` bounds each used column to ``[0, max_coord)``.
    """
    capacity = max_coord ** len(axes)
    hi = min(max_size, capacity)
    point = st.tuples(*(st.integers(0, max_coord - 1) for _ in axes))
    points = draw(st.lists(point, min_size=min(min_size, hi), max_size=hi, unique=True))
    coords = torch.zeros(len(points), 4, dtype=torch.int32)  # [n, 4]
    if points:
        coords[:, list(axes)] = torch.tensor(points, dtype=torch.int32)
    return coords


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
    modalities: Sequence[str] = ("image", "video", "depth"),
    dtype: torch.dtype = torch.float32,
) -> SparseLatent:
    """A valid :class:`SparseLatent` with ragged samples (empty ones included)."""
    C = draw(st.integers(1, 8)) if channels is None else channels
    B = draw(st.integers(min_samples, max_samples))
    parts = [draw(coords4d(max_size=max_len, max_coord=max_coord)) for _ in range(B)]
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
) -> torch.Tensor:
    """A clip ``[3, T, H, W]``: float in [0, 1] or uint8."""
    T = draw(st.integers(1, max_frames))
    H = draw(st.integers(min_side, max_side))
    W = draw(st.integers(min_side, max_side))
    return _pixels(draw, (3, T, H, W), dtype)


@st.composite
def gaussian_sets(
    draw: st.DrawFn,
    *,
    max_gaussians: int = 24,
    min_gaussians: int = 0,
    extent: float = 0.35,
    scales: tuple[float, float] = (0.01, 0.08),
    dtype: torch.dtype = torch.float64,
):
    """A :class:`atoken.modalities.mesh.GaussianSet` of up to ``max_gaussians`` Gaussians with
    means in ``[-extent, extent]^3``, scales in ``scales``, opacities in [0.05, 0.95], colour
    coefficients in [-2, 2].

    With the default ``extent`` every mean projects inside the image of every camera of
    ``sphere_cameras`` (radius 2, 40 degrees: the cone holds a sphere of radius
    ``2 sin(20 deg) = 0.684`` about the origin, and the box's corners lie at
    ``0.35 sqrt(3) = 0.606``); a Gaussian's footprint may still reach past the image's edge."""
    from atoken.modalities.mesh.gaussians import GaussianSet

    n = draw(st.integers(min_gaussians, max_gaussians))

    def floats(lo: float, hi: float, *shape: int) -> torch.Tensor:
        elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        return torch.from_numpy(draw(hnp.arrays(np.float64, (n, *shape), elements=elements)))

    quats = floats(-1.0, 1.0, 4)
    quats[:, 0] += 1.5  # never the zero quaternion
    return GaussianSet(
        means=floats(-extent, extent, 3).to(dtype),
        scales=floats(*scales, 3).to(dtype),
        quats=torch.nn.functional.normalize(quats, dim=1).to(dtype),
        opacities=floats(0.05, 0.95).to(dtype),
        sh0=floats(-2.0, 2.0, 3).to(dtype),
    )


def _pixels(draw: st.DrawFn, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        arr = draw(hnp.arrays(np.uint8, shape))
    elif dtype.is_floating_point:
        unit = st.floats(0.0, 1.0, allow_nan=False, width=32)
        arr = draw(hnp.arrays(np.float32, shape, elements=unit))
    else:
        raise TypeError(f"pixels must be uint8 or float, got {dtype}")
    return torch.from_numpy(arr).to(dtype)
