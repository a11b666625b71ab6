"""The official AToken 3D input: a folder of V views (RGB + depth) and their ``transforms.json``.

The layout the official packing script reads (``atoken_inference/scripts/pack_multiview_feat.py``
of apple/ml-atoken, commit 3f5afdc; the renders themselves come from a Blender script that is
not released)::

    FOLDER/transforms.json   {"camera_angle_x": fov, "frames": [{"file_path": "000.png",
                              "camera_angle_x": fov, "transform_matrix": c2w}, ...]}
    FOLDER/000.png           RGB or RGBA, any square size (resized to 256 for the features)
    FOLDER/000_depth.npy     float [H, W] camera z; negative = no surface (or 000_depth.exr)

* ``transform_matrix``: camera -> world, NeRF / Blender axes (x right, y up, looking down -z).
  The official script negates its y and z columns (OpenCV axes: y down, looking down +z) and
  inverts it: :meth:`OfficialViews.w2c`.
* ``camera_angle_x``: the horizontal field of view in radians, per frame (the official script
  reads the frame's; the NeRF files' top-level value is used where a frame has none). It gives
  normalised intrinsics ``fx = fy = 0.5 / tan(fov / 2)``, ``cx = cy = 0.5`` (utils3d's
  ``intrinsics_from_fov_xy``), i.e. square images: :meth:`OfficialViews.intrinsics`.
* depth: ``.npy`` as it is; ``.exr`` (needs the ``OpenEXR`` package) as the official script
  converts it: values above 1e6 (Blender's background) become -1, stored as float16.

:func:`load_views` reads and checks a folder; :func:`~.official_packing.voxel_features` turns it
into the voxel features the official encoder reads, and :meth:`OfficialViews.to_views` into
the mesh family's ``Views`` (atoken's own mesh path). The mesh family writes its renders in
this layout (``atoken data export-views``, :func:`~.official_views.write_official_views`).

Shapes (V views; images H x W, depth maps Hd x Wd, both square):
    images  V arrays uint8 [H, W, C], C = 3 (RGB) or 4 (RGBA)
    depth   float32 [V, Hd, Wd]
    c2w     float32 [V, 4, 4] as in the file (OpenGL axes)
    fov_x   float64 [V] radians
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from atoken.core.errors import ModalityInputError
from atoken.modalities.mesh.views import Views

__all__ = ["TRANSFORMS_NAME", "OfficialViews", "load_views", "read_depth"]

#: The camera file of the layout.
TRANSFORMS_NAME = "transforms.json"
#: Depth above this is Blender's background: the official conversion writes -1 there.
EXR_BACKGROUND = 1e6


@attrs.frozen(kw_only=True, eq=False)
class OfficialViews:
    """The views of one object in the official layout, as :func:`load_views` reads them."""

    folder: Path
    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    depth: torch.Tensor
    c2w: torch.Tensor
    fov_x: torch.Tensor

    @property
    def count(self) -> int:
        return len(self.images)

    def w2c(self) -> torch.Tensor:
        """World -> camera ``[V, 4, 4]`` float32 in OpenCV axes (x right, y down, looking down
        +z): ``c2w`` with its y and z columns negated, inverted (in float32, as the official
        script does)."""
        c2w = self.c2w.clone()  # [V, 4, 4]
        c2w[:, :3, 1:3] *= -1
        return torch.inverse(c2w)

    def intrinsics(self) -> torch.Tensor:
        """Normalised intrinsics ``[V, 3, 3]`` float32: a point at camera ``(x, y, z)`` is seen
        at ``(u, v) = (fx x / z + 0.5, fy y / z + 0.5)``, (0, 0) the image's top-left corner and
        (1, 1) its bottom-right one."""
        fov = self.fov_x.float()  # [V]
        focal = 0.5 / torch.tan(fov / 2)  # [V]
        k = torch.zeros(self.count, 3, 3)  # [V, 3, 3]
        k[:, 0, 0] = k[:, 1, 1] = focal
        k[:, 0, 2] = k[:, 1, 2] = 0.5
        k[:, 2, 2] = 1
        return k

    def feature_images(self, size: int = 256) -> torch.Tensor:
        """The images the official features are cut from, ``[V, 3, size, size]`` float32 in
        [0, 1]: each resized to ``size`` (Lanczos; an RGBA image is resized premultiplied, as
        Pillow does) and its alpha dropped (pasted on black without a mask, as the official
        script does: transparent pixels keep their RGB)."""
        from PIL import Image

        out = torch.empty(self.count, 3, size, size)
        for i, pixels in enumerate(self.images):
            image = Image.fromarray(pixels).resize((size, size), Image.LANCZOS)
            canvas = Image.new("RGB", (size, size), (0, 0, 0))
            canvas.paste(image, (0, 0))
            array = np.asarray(canvas.convert("RGB"), dtype=np.float32) / 255  # [size, size, 3]
            out[i] = torch.from_numpy(array).permute(2, 0, 1)
        return out

    def to_views(self) -> Views:
        """The same views as the mesh family's ``Views`` (atoken's own mesh path: ``voxelize``,
        ``Tokenizer.encode([views], ...)``): RGB at the images' size (alpha dropped), depth 0
        where the file has none, kornia ``PinholeCamera`` s with pixel centres on integer
        coordinates (``cx = (W - 1) / 2``, as a Blender render's pixels are centred).

        Raises:
            ModalityInputError: depth maps of another size than the images.
        """
        h, w = self.images[0].shape[:2]
        if tuple(self.depth.shape[1:]) != (h, w):
            raise ModalityInputError(
                f"official views {self.folder}: depth maps are "
                f"{tuple(self.depth.shape[1:])}, the images {(h, w)}; the mesh path needs "
                "one size"
            )
        rgb = torch.from_numpy(np.stack([im[..., :3] for im in self.images])).float() / 255
        depth = torch.where(self.depth > 0, self.depth, torch.zeros_like(self.depth))
        from kornia.geometry.camera import PinholeCamera

        w2c = torch.linalg.inv(_opencv(self.c2w.double())).float()  # [V, 4, 4]
        k = torch.eye(4).repeat(self.count, 1, 1)  # [V, 4, 4]
        k[:, 0, 0] = k[:, 1, 1] = (0.5 * w / torch.tan(self.fov_x / 2)).float()
        k[:, 0, 2] = k[:, 1, 2] = (w - 1) / 2
        side = torch.full((self.count,), float(w))
        camera = PinholeCamera(k, w2c, side, side.clone())
        return Views(rgb=rgb.permute(0, 3, 1, 2), depth=depth, camera=camera)  # [V, 3, H, W]


def _opencv(c2w: torch.Tensor) -> torch.Tensor:
    out = c2w.clone()  # [V, 4, 4]
    out[:, :3, 1:3] *= -1
    return out


def _fail(folder: Path, message: str) -> ModalityInputError:
    return ModalityInputError(f"official views {folder}: {message}")


def _read_transforms(folder: Path) -> dict[str, Any]:
    path = folder / TRANSFORMS_NAME
    if not path.is_file():
        raise _fail(folder, f"no {TRANSFORMS_NAME} (the cameras: camera_angle_x and c2w)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(folder, f"{TRANSFORMS_NAME} is not JSON: {exc}") from exc
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(frames, list) or not frames:
        raise _fail(folder, f"{TRANSFORMS_NAME} has no 'frames' list")
    return doc


def _frame_camera(folder: Path, doc: dict[str, Any], i: int) -> tuple[str, list, float]:
    frame = doc["frames"][i]
    where = f"{TRANSFORMS_NAME} frame {i}"
    if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
        raise _fail(folder, f"{where} has no 'file_path'")
    fov = frame.get("camera_angle_x", doc.get("camera_angle_x"))
    if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 0 < fov < math.pi:
        raise _fail(folder, f"{where}: camera_angle_x must be radians in (0, pi), got {fov!r}")
    matrix = frame.get("transform_matrix")
    try:
        c2w = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        c2w = np.zeros(0)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise _fail(folder, f"{where}: transform_matrix must be 4 x 4 finite numbers")
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-6:
        raise _fail(folder, f"{where}: transform_matrix is singular")
    return frame["file_path"], matrix, float(fov)


def _image_path(folder: Path, file_path: str, i: int) -> Path:
    path = folder / file_path
    if not path.suffix and not path.is_file():
        path = path.with_name(path.name + ".png")  # NeRF files often omit the suffix
    if not path.is_file():
        raise _fail(folder, f"frame {i}: image {path.name} ({file_path!r}) is missing")
    return path


def _read_image(folder: Path, path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image).copy()  # [H, W, C]
    except (UnidentifiedImageError, OSError) as exc:
        raise _fail(folder, f"{path.name} is not a readable image: {exc}") from exc


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """One depth map ``[H, W]`` float32 as the official script reads it: a ``.npy`` file as it
    is; an ``.exr`` file's first channel with values > 1e6 set to -1, through float16 (the
    official conversion stores ``.npy`` float16).

    Raises:
        ModalityInputError: an unreadable file, not 2-D, non-finite values, or an ``.exr``
            without the ``OpenEXR`` package (``pip install OpenEXR``).
    """
    path = Path(path)
    if path.suffix == ".exr":
        depth = _read_exr(path)
        depth = np.where(depth > EXR_BACKGROUND, -1, depth).astype(np.float16)
    else:
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModalityInputError(f"depth {path}: not a readable .npy file: {exc}") from exc
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]  # [H, W, 1] -> [H, W]
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
        raise ModalityInputError(
            f"depth {path}: must be a 2-D numeric array, got {depth.dtype} {depth.shape}"
        )
    bad = int((~np.isfinite(depth)).sum())
    if bad:
        raise ModalityInputError(
            f"depth {path}: {bad} non-finite values (write -1 where no surface is seen)"
        )
    return depth.astype(np.float32)


def _read_exr(path: Path) -> np.ndarray:
    try:
        import OpenEXR
    except ImportError as exc:
        raise ModalityInputError(
            f"depth {path}: reading .exr needs the OpenEXR package (`pip install OpenEXR`); "
            "or convert the depth maps to .npy (float [H, W], -1 where no surface is seen)"
        ) from exc
    try:
        with OpenEXR.File(str(path)) as exr:  # the pixels are gone once the file is closed
            channels = exr.channels()
            name = next((n for n in ("Z", "V", "Y", "R", "RGB", "RGBA") if n in channels), None)
            pixels = np.array(channels[name or sorted(channels)[0]].pixels)
    except Exception as exc:  # the binding raises plain exceptions for a bad file
        raise ModalityInputError(f"depth {path}: not a readable .exr file: {exc}") from exc
    return pixels if pixels.ndim == 2 else pixels[..., 0]  # [H, W]


def _depth_path(folder: Path, image: Path, i: int) -> Path:
    stem = image.with_suffix("")
    for suffix in ("_depth.npy", "_depth.exr"):
        path = stem.with_name(stem.name + suffix)
        if path.is_file():
            return path
    raise _fail(folder, f"frame {i}: no depth map {stem.name}_depth.npy (or .exr) for {image.name}")


def _same_square_size(folder: Path, kind: str, names: list[str], shapes: list[tuple]) -> None:
    first = shapes[0]
    for name, shape in zip(names, shapes, strict=True):
        if shape != first:
            raise _fail(
                folder,
                f"{kind} {name} is {shape[0]} x {shape[1]}, {names[0]} {first[0]} x "
                f"{first[1]}: all views must share one size",
            )
    if first[0] != first[1]:
        raise _fail(
            folder,
            f"{kind}s must be square (one camera_angle_x for both axes), {names[0]} is "
            f"{first[0]} x {first[1]}",
        )


def load_views(folder: str | os.PathLike) -> OfficialViews:
    """Read the official multi-view layout in ``folder`` (see the module docstring).

    Raises:
        ModalityInputError: naming the file and the problem: no folder, no or unreadable
            ``transforms.json``, a frame without ``file_path``, ``camera_angle_x`` or a 4 x 4
            ``transform_matrix``, a missing or unreadable image or depth map, views of
            different sizes, non-square images or depth maps, non-finite depth.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _fail(folder, "is not a folder")
    doc = _read_transforms(folder)
    names, images, depths, c2w, fovs, depth_names = [], [], [], [], [], []
    for i in range(len(doc["frames"])):
        file_path, matrix, fov = _frame_camera(folder, doc, i)
        image_path = _image_path(folder, file_path, i)
        depth_path = _depth_path(folder, image_path, i)
        names.append(image_path.name)
        images.append(_read_image(folder, image_path))
        depths.append(read_depth(depth_path))
        depth_names.append(depth_path.name)
        c2w.append(matrix)
        fovs.append(fov)
    _same_square_size(folder, "image", names, [im.shape[:2] for im in images])
    _same_square_size(folder, "depth map", depth_names, [d.shape for d in depths])
    return OfficialViews(
        folder=folder,
        names=tuple(names),
        images=tuple(images),
        depth=torch.from_numpy(np.stack(depths)),  # [V, Hd, Wd]
        c2w=torch.tensor(c2w, dtype=torch.float32),  # [V, 4, 4]
        fov_x=torch.tensor(fovs, dtype=torch.float64),  # [V]
    )
