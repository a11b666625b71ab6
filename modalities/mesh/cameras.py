"""Cameras looking at a normalised asset: kornia ``PinholeCamera`` batches, OpenCV convention.

Shapes (V views):
    intrinsics  float32 [V, 4, 4]  fx, fy on the diagonal, (cx, cy) the principal point
    extrinsics  float32 [V, 4, 4]  world -> camera, camera axes x right, y down, z forward
    height, width  float32 [V]

Pixel convention (used by every renderer and the voxeliser): pixel ``(row v, column u)`` is
centred on image coordinate ``(u, v)``, so a centred camera has ``cx = (W - 1) / 2``; this is
kornia's ``depth_to_3d_v2`` convention (a pixel grid of integer coordinates).

:func:`sphere_cameras` places V cameras on a Fibonacci sphere of ``radius`` around the origin,
each looking at it (the official data: radius 2, FoV 40 degrees). :func:`orbit_cameras` is a
turntable at one elevation, for pictures.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.camera import PinholeCamera

from atoken.core.errors import ModalityInputError

__all__ = [
    "camera_centers",
    "look_at",
    "orbit_cameras",
    "pinhole",
    "select_views",
    "sphere_cameras",
]


def look_at(eyes: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """World -> camera matrices ``[V, 4, 4]`` of cameras at ``eyes [V, 3]`` looking at
    ``target [3]`` (the origin), with the world's +z pointing up in the image (-y)."""
    eyes = eyes.float()
    target = torch.zeros(3) if target is None else target.float()
    forward = torch.nn.functional.normalize(target - eyes, dim=-1)  # [V, 3] camera +z
    up = torch.tensor([0.0, 0.0, 1.0]).expand_as(forward)
    # A camera straight above or below the target: take +y as "up" instead.
    near_pole = torch.cross(forward, up, dim=-1).norm(dim=-1) < 1e-6
    up = torch.where(near_pole[:, None], torch.tensor([0.0, 1.0, 0.0]), up)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)  # +x
    down = torch.cross(forward, right, dim=-1)  # +y (image rows grow downwards)
    rot = torch.stack([right, down, forward], dim=1)  # [V, 3, 3] rows: camera axes in world
    w2c = torch.eye(4).repeat(eyes.shape[0], 1, 1)  # [V, 4, 4]
    w2c[:, :3, :3] = rot
    w2c[:, :3, 3] = -(rot @ eyes[:, :, None])[..., 0]
    return w2c


def pinhole(w2c: torch.Tensor, size: int, fov_degrees: float) -> PinholeCamera:
    """A kornia ``PinholeCamera`` batch of square ``size`` images with field of view
    ``fov_degrees`` for the world -> camera matrices ``w2c [V, 4, 4]``."""
    if not isinstance(size, int) or size < 2:
        raise ModalityInputError(f"cameras: image size must be an int >= 2, got {size!r}")
    if not 0 < float(fov_degrees) < 180:
        raise ModalityInputError(f"cameras: fov must be in (0, 180) degrees, got {fov_degrees}")
    v = w2c.shape[0]
    focal = 0.5 * size / math.tan(math.radians(float(fov_degrees)) / 2)
    k = torch.eye(4).repeat(v, 1, 1)  # [V, 4, 4]
    k[:, 0, 0] = k[:, 1, 1] = focal
    k[:, 0, 2] = k[:, 1, 2] = (size - 1) / 2
    side = torch.full((v,), float(size))
    return PinholeCamera(k, w2c.float().clone(), side, side.clone())


def sphere_cameras(
    views: int, size: int, *, fov_degrees: float = 40.0, radius: float = 2.0
) -> PinholeCamera:
    """``views`` cameras on a Fibonacci sphere of ``radius``, looking at the origin."""
    if not isinstance(views, int) or views < 1:
        raise ModalityInputError(f"cameras: views must be an int >= 1, got {views!r}")
    if not float(radius) > 0.9:  # the asset fills [-0.5, 0.5]^3: a camera must stay outside
        raise ModalityInputError(f"cameras: radius must be > 0.9, got {radius}")
    i = torch.arange(views, dtype=torch.float64)
    z = 1 - (2 * i + 1) / views  # [V] in (-1, 1): never exactly at a pole
    ring = torch.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))  # the golden angle
    eyes = torch.stack([ring * torch.cos(phi), ring * torch.sin(phi), z], dim=1) * radius
    return pinhole(look_at(eyes.float()), size, fov_degrees)


def orbit_cameras(
    views: int,
    size: int,
    *,
    elevation_degrees: float = 20.0,
    fov_degrees: float = 40.0,
    radius: float = 2.0,
) -> PinholeCamera:
    """A turntable: ``views`` cameras evenly around the z axis at one elevation."""
    if not isinstance(views, int) or views < 1:
        raise ModalityInputError(f"cameras: views must be an int >= 1, got {views!r}")
    az = torch.arange(views, dtype=torch.float64) * (2 * math.pi / views)
    el = math.radians(float(elevation_degrees))
    height = torch.full_like(az, math.sin(el))
    eyes = torch.stack([torch.cos(az) * math.cos(el), torch.sin(az) * math.cos(el), height], 1)
    return pinhole(look_at((eyes * radius).float()), size, fov_degrees)


def camera_centers(camera: PinholeCamera) -> torch.Tensor:
    """The camera positions in the world ``[V, 3]``."""
    rot = camera.extrinsics[:, :3, :3]  # [V, 3, 3]
    t = camera.extrinsics[:, :3, 3:]  # [V, 3, 1]
    return -(rot.transpose(1, 2) @ t)[..., 0]


def select_views(camera: PinholeCamera, index: torch.Tensor | list[int]) -> PinholeCamera:
    """The cameras at ``index`` (a sub-batch)."""
    index = torch.as_tensor(index, dtype=torch.long)
    return PinholeCamera(
        camera.intrinsics[index],
        camera.extrinsics[index],
        camera.height[index],
        camera.width[index],
    )
