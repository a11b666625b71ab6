"""A mesh's renders written in the official AToken multi-view layout (``transforms.json``).

The official 3D input (``atoken_inference/scripts/pack_multiview_feat.py`` of apple/ml-atoken,
read by :mod:`.official_layout`) is a folder of V views::

    OUT/000.png          RGBA, 8 bit; alpha 255 where a surface is seen, RGB = alpha = 0 elsewhere
    OUT/000_depth.npy    float32 [H, W], the camera z of the surface, -1 where none is seen
    ...
    OUT/transforms.json  {"camera_angle_x": fov, "frames": [{"file_path": "000.png",
                          "camera_angle_x": fov, "transform_matrix": c2w}, ...]}

``transform_matrix`` is camera -> world in the NeRF / Blender convention (camera x right,
y up, looking down -z), ``camera_angle_x`` the horizontal field of view in radians: the
official script flips its y and z columns to get OpenCV axes. Depth -1 is what the official
script makes of Blender's background (depth > 1e6 -> -1).

:func:`to_official_views` gives any :class:`~.views.Views` in that form without files,
:func:`write_views` writes any :class:`~.views.Views` (the cameras must be square, centred
pinholes, which is all ``camera_angle_x`` can describe); :func:`write_official_views` renders a
mesh with the mesh family's cameras and renderer first. Shapes: V views of H x W pixels.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atoken.core.errors import ModalityInputError, OutputFolderError
from atoken.modalities.mesh.cameras import sphere_cameras
from atoken.modalities.mesh.meshes import load_mesh
from atoken.modalities.mesh.official_layout import TRANSFORMS_NAME, OfficialViews, load_views
from atoken.modalities.mesh.views import Views, render_views

__all__ = [
    "TRANSFORMS_NAME",
    "depth_name",
    "image_name",
    "is_official_folder",
    "is_official_views",
    "official_folder_views",
    "opengl_c2w",
    "to_official_views",
    "write_official_views",
    "write_views",
]

#: Depth written where no surface is seen (the official script's value for Blender's background).
BACKGROUND_DEPTH = -1.0


def image_name(index: int) -> str:
    """``000.png``: the file of view ``index`` (the official script's ``f"{i:03d}.png"``)."""
    return f"{index:03d}.png"


def depth_name(index: int) -> str:
    """``000_depth.npy``: the depth map of view ``index``."""
    return f"{index:03d}_depth.npy"


def opengl_c2w(w2c: torch.Tensor) -> torch.Tensor:
    """Camera -> world matrices ``[V, 4, 4]`` (float64) in the OpenGL / Blender axes (x right,
    y up, looking down -z) of world -> camera matrices ``w2c [V, 4, 4]`` in OpenCV axes (x right,
    y down, looking down +z): the inverse with its y and z columns negated."""
    c2w = torch.linalg.inv(w2c.double())  # [V, 4, 4] OpenCV camera -> world
    c2w[:, :3, 1:3] *= -1  # camera y down -> up, z forward -> backward
    return c2w


def _camera_angle_x(views: Views) -> list[float]:
    """The horizontal field of view of each camera, checking what the layout can describe."""
    cam = views.camera
    h, w = views.size
    if h != w:
        raise ModalityInputError(f"official views: images must be square, got {h} x {w}")
    centre = (w - 1) / 2  # pixel centres on integer coordinates (see cameras.py)
    fx, fy = cam.fx.double(), cam.fy.double()
    off_centre = (cam.cx.double() - centre).abs().max() > 1e-4 or (
        cam.cy.double() - centre
    ).abs().max() > 1e-4
    if bool(off_centre) or bool(((fx - fy).abs() > 1e-4 * fx).any()):
        raise ModalityInputError(
            "official views: transforms.json describes centred cameras with square pixels "
            "(camera_angle_x only); these cameras have another principal point or fx != fy"
        )
    return [2 * math.atan(0.5 * w / float(f)) for f in fx]


def _check_out(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError("is a file, not a folder", folder=str(folder))
    if not folder.exists() or overwrite:
        return
    entries = sorted(p.name for p in folder.iterdir())
    if entries:
        raise OutputFolderError(
            f"holds {len(entries)} entries ({', '.join(entries[:4])}); choose a new or an "
            "empty folder, or pass overwrite=True (--overwrite) to replace the views in it",
            folder=str(folder),
        )


def to_official_views(views: Views, *, folder: str | os.PathLike = "<memory>") -> OfficialViews:
    """``views`` as :class:`~.official_layout.OfficialViews`, exactly what :func:`write_views`
    then :func:`~.official_layout.load_views` give, without the files:
    8-bit RGBA images (alpha 255 where a surface is seen, RGB = alpha = 0 elsewhere), depth
    float32 with -1 where none is seen, OpenGL camera -> world matrices through float32 and
    each view's ``camera_angle_x``. ``folder`` only names the views in error messages.

    Raises:
        ModalityInputError: cameras that ``camera_angle_x`` cannot describe (non-square
            images, an off-centre principal point or fx != fy).
    """
    fov = _camera_angle_x(views)
    seen = views.depth > 0  # [V, H, W]
    rgb = (views.rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # [V, H, W, 3]
    alpha = seen.to(torch.uint8)[..., None] * 255  # [V, H, W, 1]
    rgba = torch.cat([rgb * seen[..., None], alpha], dim=-1).numpy()  # [V, H, W, 4]
    depth = torch.where(seen, views.depth, torch.full_like(views.depth, BACKGROUND_DEPTH))
    return OfficialViews(
        folder=Path(folder),
        names=tuple(image_name(i) for i in range(views.count)),
        images=tuple(np.ascontiguousarray(rgba[i]) for i in range(views.count)),
        depth=depth.float().contiguous(),  # [V, H, W]
        c2w=opengl_c2w(views.camera.extrinsics).float(),  # [V, 4, 4], as read from the json
        fov_x=torch.tensor(fov, dtype=torch.float64),  # [V]
    )


def write_views(views: Views, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``views`` (colour, depth, cameras) to ``out_dir`` in the official layout.

    Raises:
        ModalityInputError: cameras that ``camera_angle_x`` cannot describe (non-square
            images, an off-centre principal point or fx != fy).
        OutputFolderError: ``out_dir`` is a file, or holds files and ``overwrite`` is False.
    """
    folder = Path(out_dir)
    official = to_official_views(views, folder=folder)
    _check_out(folder, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    c2w = opengl_c2w(views.camera.extrinsics)  # [V, 4, 4] float64, as written
    from PIL import Image

    frames = []
    for i, name in enumerate(official.names):
        Image.fromarray(official.images[i], mode="RGBA").save(folder / name)
        np.save(folder / depth_name(i), official.depth[i].numpy())
        fov, matrix = float(official.fov_x[i]), c2w[i].tolist()
        frames.append({"file_path": name, "camera_angle_x": fov, "transform_matrix": matrix})
    doc = {"camera_angle_x": float(official.fov_x[0]), "frames": frames}
    (folder / TRANSFORMS_NAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return folder


def write_official_views(
    mesh: Any,
    out_dir: str | os.PathLike,
    *,
    views: int = 16,
    size: int = 512,
    fov_degrees: float = 40.0,
    radius: float = 2.0,
    renderer: str = "auto",
    overwrite: bool = False,
) -> Views:
    """Render ``mesh`` (a file or a trimesh, normalised to [-0.5, 0.5]^3 by
    :func:`~.meshes.load_mesh`) from ``views`` cameras on the mesh family's Fibonacci sphere
    (:func:`~.cameras.sphere_cameras`) and write the renders to ``out_dir`` in the official
    layout (:func:`write_views`). Returns the rendered :class:`~.views.Views`.

    Raises:
        ModalityInputError: as :func:`~.meshes.load_mesh`, :func:`~.cameras.sphere_cameras`
            and :func:`~.views.render_views` (an unreadable mesh, bad counts or sizes).
        OutputFolderError: as :func:`write_views`.
    """
    _check_out(Path(out_dir), overwrite)
    normalised = load_mesh(mesh)
    cameras = sphere_cameras(views, size, fov_degrees=fov_degrees, radius=radius)
    rendered = render_views(normalised.mesh, cameras, renderer=renderer)
    write_views(rendered, out_dir, overwrite=overwrite)
    return rendered


def is_official_views(sample: Any) -> bool:
    """Whether ``sample`` is views in the official layout (:class:`OfficialViews`)."""
    return isinstance(sample, OfficialViews)


def is_official_folder(sample: Any) -> bool:
    """Whether ``sample`` is the path of a folder in the official layout (it holds
    ``transforms.json``; its files are read, and checked, by :func:`load_views`)."""
    return isinstance(sample, str | os.PathLike) and (Path(sample) / TRANSFORMS_NAME).is_file()


def official_folder_views(sample: Any) -> Any:
    """A folder in the official layout (:func:`is_official_folder`) -> its
    :class:`OfficialViews` (:func:`load_views`); any other sample as it is."""
    return load_views(sample) if is_official_folder(sample) else sample
