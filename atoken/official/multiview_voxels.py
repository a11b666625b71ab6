"""The official multi-view packing (views -> voxel features), kept under this name: it lives in
the mesh family, :mod:`atoken.modalities.mesh.official_packing`."""

from __future__ import annotations

from atoken.modalities.mesh.official_packing import (
    MAX_SURFACE_POINTS,
    OfficialVoxels,
    occupied_voxels,
    surface_points,
    voxel_centers,
    voxel_features,
)

__all__ = [
    "MAX_SURFACE_POINTS",
    "OfficialVoxels",
    "occupied_voxels",
    "surface_points",
    "voxel_centers",
    "voxel_features",
]
