"""Mesh input: load a file or take a trimesh object, normalise it to [-0.5, 0.5]^3, colour it.

Shapes: vertices [nv, 3], faces [nf, 3]; ``surface_colors`` takes hit points [n, 3] on faces
[n] and returns uint8 RGB [n, 3].

Colour rules (the first that applies): a texture image looked up at the hit's interpolated UV
(nearest texel, ``trimesh.visual.uv_to_color``); vertex colours blended barycentrically; face
colours; the material's or visual's main colour (trimesh's default grey for a bare mesh).
The normalisation centres the bounding box on the origin and scales its longest side to 1
(shrunk by ``1e-4`` so the surface stays inside the last voxel).
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import numpy as np

from atoken.core.errors import ModalityInputError

__all__ = ["NormalizedMesh", "load_mesh", "surface_colors"]

#: Longest side of a normalised mesh (just under 1 so the voxel index of +0.5 stays in range).
UNIT = 1.0 - 1e-4


@attrs.frozen(kw_only=True)
class NormalizedMesh:
    """A mesh in the unit cube and the transform that put it there.

    Attributes:
        mesh: the ``trimesh.Trimesh``, vertices in [-0.5, 0.5]^3.
        center: the original bounding-box centre ``[3]``.
        scale: original units -> unit cube (``normalized = (original - center) * scale``).
    """

    mesh: Any
    center: tuple[float, float, float]
    scale: float


def _trimesh():
    try:
        import trimesh
    except ImportError as exc:  # pragma: no cover - a dependency of atoken
        raise ModalityInputError("mesh: reading meshes needs `pip install trimesh`") from exc
    return trimesh


def _from_path(path: str | os.PathLike) -> Any:
    trimesh = _trimesh()
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ModalityInputError(f"mesh: no such file {name!r}")
    try:
        loaded = trimesh.load(name, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for files that are not meshes
        raise ModalityInputError(
            f"mesh: {name!r} is not a readable mesh ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(loaded, trimesh.Trimesh):
        raise ModalityInputError(f"mesh: {name!r} holds no triangle mesh")
    return loaded


def load_mesh(source: Any) -> NormalizedMesh:
    """A mesh file (OBJ, PLY, GLB/glTF 2, ... anything trimesh reads), a ``trimesh.Trimesh``
    or a ``trimesh.Scene`` -> the mesh normalised to the unit cube.

    Raises:
        ModalityInputError: a missing file, a file that is not a mesh, a mesh without faces,
            or one whose vertices are not finite or span no volume along every axis.
    """
    trimesh = _trimesh()
    if isinstance(source, (str, os.PathLike)):
        mesh = _from_path(source)
    elif isinstance(source, trimesh.Scene):
        mesh = source.to_mesh() if source.geometry else trimesh.Trimesh()
    elif isinstance(source, trimesh.Trimesh):
        mesh = source
    else:
        raise ModalityInputError(f"mesh: cannot read a {type(source).__name__} as a mesh")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
    if len(faces) == 0 or len(vertices) == 0:
        raise ModalityInputError("mesh: the mesh is empty (no faces)")
    if not np.isfinite(vertices).all():
        raise ModalityInputError("mesh: vertex positions are not finite")
    used = vertices[np.unique(faces)]
    lo, hi = used.min(0), used.max(0)
    extent = float((hi - lo).max())
    if not extent > 0:
        raise ModalityInputError("mesh: all faces are one point (zero extent)")
    center = (lo + hi) / 2
    scale = UNIT / extent
    out = mesh.copy()
    out.vertices = (vertices - center) * scale
    return NormalizedMesh(mesh=out, center=tuple(float(c) for c in center), scale=scale)


def _barycentric(mesh: Any, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    from trimesh.triangles import points_to_barycentric

    return points_to_barycentric(mesh.triangles[faces], points)  # [n, 3]


def _main_color(visual: Any) -> np.ndarray:
    material = getattr(visual, "material", None)
    color = getattr(material, "main_color", None) if material is not None else None
    if color is None:
        color = getattr(visual, "main_color", None)
    if color is None:
        color = (102, 102, 102, 255)
    return np.asarray(color, dtype=np.uint8)[:3]


def _texture_image(visual: Any) -> Any:
    material = getattr(visual, "material", None)
    if material is None:
        return None
    image = getattr(material, "image", None)
    return image if image is not None else getattr(material, "baseColorTexture", None)


def surface_colors(mesh: Any, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[n, 3]`` of ``points [n, 3]`` lying on ``faces [n]`` of ``mesh``."""
    n = len(faces)
    if n == 0:
        return np.zeros((0, 3), np.uint8)
    visual = mesh.visual
    kind = visual.kind
    if kind == "texture" and getattr(visual, "uv", None) is not None:
        image = _texture_image(visual)
        if image is not None:
            from trimesh.visual.color import uv_to_color

            bary = _barycentric(mesh, faces, points)  # [n, 3]
            uv = np.einsum("nk,nkc->nc", bary, np.asarray(visual.uv)[mesh.faces[faces]])
            return np.asarray(uv_to_color(uv, image), dtype=np.uint8)[:, :3]
    if kind == "vertex":
        bary = _barycentric(mesh, faces, points)
        rgb = np.asarray(visual.vertex_colors, dtype=np.float64)[mesh.faces[faces], :3]
        return np.clip(np.einsum("nk,nkc->nc", bary, rgb).round(), 0, 255).astype(np.uint8)
    if kind == "face":
        return np.asarray(visual.face_colors, dtype=np.uint8)[faces, :3]
    return np.broadcast_to(_main_color(visual), (n, 3)).copy()
