"""Hypothesis strategies for 3D samples: meshes, voxels, occupancy grids, Gaussian sets.

Shapes: vertices float64 [nv, 3], faces int64 [nf, 3]; voxel coords int32 [n, 3] = (x, y, z)
in [0, R), patches float32 [n, p, p, 3] in [0, 1]; an occupancy grid [X, Y, Z] of 0/1.

``meshes`` and ``occupancy_grids`` make raw data any plugin may read (``trimesh`` objects,
tensors); ``voxels`` and ``gaussian_sets`` make the mesh family's own types
(:class:`atoken.modalities.mesh.Voxels`, :class:`atoken.modalities.mesh.GaussianSet`), imported
when drawn. Import them all from :mod:`atoken.testing.strategies`.
"""

from __future__ import annotations

from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

__all__ = ["gaussian_sets", "meshes", "occupancy_grids", "voxels"]

#: Closed triangle meshes around the origin whose vertex directions :func:`meshes` draws radii
#: along: trimesh's box (8 vertices), icosahedron (12) and once-subdivided icosphere (42).
_BASES = ("box", "icosahedron", "icosphere")


def _base(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit vertex directions ``[nv, 3]`` and faces ``[nf, 3]`` of a base polyhedron."""
    import trimesh

    mesh = {
        "box": trimesh.creation.box,
        "icosahedron": trimesh.creation.icosahedron,
        "icosphere": lambda: trimesh.creation.icosphere(subdivisions=1),
    }[name]()
    directions = np.asarray(mesh.vertices, dtype=np.float64)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions, np.asarray(mesh.faces, dtype=np.int64)


@st.composite
def meshes(
    draw: st.DrawFn,
    *,
    min_radius: float = 0.3,
    max_stretch: float = 4.0,
    colors: bool = True,
) -> Any:
    """A closed triangle mesh (``trimesh.Trimesh``, built with ``process=False``) that a mesh
    modality reads: ``MeshModality.patchify`` renders and voxelises it.

    The mesh is a box, an icosahedron or a once-subdivided icosphere whose vertices are moved
    along their directions from the centre to radii in ``[min_radius, 1]``, stretched per axis
    by up to ``max_stretch``, then scaled by ``10**[-2, 2]`` and moved by up to 10 per axis
    (which :func:`atoken.modalities.mesh.load_mesh` normalises away). Each triangle spans the
    same cone from the centre as before, so every ray from the centre crosses the surface once:
    the mesh is watertight, encloses the centre and a volume, and every camera looking at it
    sees it. ``colors``: also draw none (trimesh's grey), per-face or per-vertex RGBA colours.
    """
    import trimesh

    if not 0 < min_radius <= 1 or max_stretch < 1:
        raise InvalidArgument(
            f"need 0 < min_radius <= 1 and max_stretch >= 1, got {min_radius}, {max_stretch}"
        )
    directions, faces = _base(draw(st.sampled_from(_BASES)))
    nv, nf = directions.shape[0], faces.shape[0]
    radii = draw(hnp.arrays(np.float64, (nv, 1), elements=st.floats(min_radius, 1.0)))
    stretch = draw(hnp.arrays(np.float64, (3,), elements=st.floats(1.0, max_stretch)))
    scale = 10.0 ** draw(st.floats(-2.0, 2.0))
    offset = draw(hnp.arrays(np.float64, (3,), elements=st.floats(-10.0, 10.0)))
    vertices = directions * radii * stretch * scale + offset  # [nv, 3]
    kind = draw(st.sampled_from(["none", "face", "vertex"])) if colors else "none"
    rgba = {"face": nf, "vertex": nv}.get(kind, 0)
    palette = draw(hnp.arrays(np.uint8, (rgba, 4))) if rgba else None
    palette_arg = {"face": "face_colors", "vertex": "vertex_colors"}.get(kind)
    extra = {palette_arg: palette} if palette_arg else {}
    return trimesh.Trimesh(vertices=vertices, faces=faces, process=False, **extra)


@st.composite
def voxels(
    draw: st.DrawFn,
    *,
    resolution: int | None = None,
    max_resolution: int = 8,
    patch_size: int = 4,
    min_voxels: int = 0,
    max_voxels: int = 32,
) -> Any:
    """:class:`atoken.modalities.mesh.Voxels`, the mesh modality's canonical sample: up to
    ``max_voxels`` distinct active voxels of an ``R^3`` grid (``R = resolution``, or drawn in
    ``[1, max_resolution]``) with RGB patches ``[n, p, p, 3]`` in [0, 1] (``p = patch_size``);
    zero voxels included unless ``min_voxels`` > 0."""
    from atoken.modalities.mesh.voxelize import Voxels

    R = draw(st.integers(1, max_resolution)) if resolution is None else resolution
    if R < 1 or patch_size < 1 or min_voxels > min(max_voxels, R**3):
        raise InvalidArgument(
            f"need resolution, patch_size >= 1 and min_voxels <= min(max_voxels, R**3), got "
            f"R={R}, patch_size={patch_size}, min_voxels={min_voxels}, max_voxels={max_voxels}"
        )
    hi = min(max_voxels, R**3)
    flat = draw(st.lists(st.integers(0, R**3 - 1), min_size=min_voxels, max_size=hi, unique=True))
    index = torch.tensor(flat, dtype=torch.int64)  # [n] raster index, x slowest
    coords = torch.stack([index // (R * R), (index // R) % R, index % R], dim=1)  # [n, 3]
    unit = st.floats(0.0, 1.0, allow_nan=False, width=32)
    patches = draw(hnp.arrays(np.float32, (len(flat), patch_size, patch_size, 3), elements=unit))
    return Voxels.create(coords.reshape(-1, 3), torch.from_numpy(patches), R)


@st.composite
def occupancy_grids(
    draw: st.DrawFn,
    *,
    min_side: int = 1,
    max_side: int = 8,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """An occupancy grid ``[X, Y, Z]`` (sides in ``[min_side, max_side]``) of 0/1 in ``dtype``
    (bool, an integer or a float type); the empty and the full grid included. Its occupied
    cells in raster order are ``raster_coords(grid.shape, layout="xyz")[grid.flatten() != 0]``
    (:mod:`atoken.core.coords`)."""
    if min_side < 0 or max_side < min_side:
        raise InvalidArgument(f"need 0 <= min_side <= max_side, got {min_side}, {max_side}")
    shape = tuple(draw(st.integers(min_side, max_side)) for _ in range(3))
    cells = draw(hnp.arrays(np.bool_, shape))
    return torch.from_numpy(cells).to(dtype)


@st.composite
def gaussian_sets(
    draw: st.DrawFn,
    *,
    max_gaussians: int = 24,
    min_gaussians: int = 0,
    extent: float = 0.35,
    scales: tuple[float, float] = (0.01, 0.08),
    dtype: torch.dtype = torch.float64,
) -> Any:
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
