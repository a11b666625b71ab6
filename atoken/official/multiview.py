"""The official multi-view layout (``transforms.json`` + RGB + depth), kept under this name: it
lives in the mesh family, :mod:`atoken.modalities.mesh.official_layout`."""

from __future__ import annotations

from atoken.modalities.mesh.official_layout import (
    TRANSFORMS_NAME,
    OfficialViews,
    load_views,
    read_depth,
)

__all__ = ["TRANSFORMS_NAME", "OfficialViews", "load_views", "read_depth"]
