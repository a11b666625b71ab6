"""Views -> surface voxels with RGB patches, by the official rule.

Shapes (V views of H x W, a grid of R^3 voxels, n active voxels, patch p):
    points   float32 [P, 3] back-projected surface points (every pixel with depth > 0)
    coords   int32 [n, 3] voxel indices (x, y, z) in [0, R), raster order (x slowest)
    patches  float32 [n, p, p, 3] in [0, 1]

The rule (``pack_multiview_feat.py`` of the official release; ``../shared`` notes): a voxel of
the R^3 grid over [-0.5, 0.5]^3 is active when a back-projected surface point lies in it; its
feature is the p x p RGB patch around the projection of its centre in the single nearest view
(the smallest camera depth among the views it projects into), nearest-neighbour, black outside
the image. Voxels hidden from every view (concavities) are missed by design.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from kornia.geometry.depth import depth_to_3d_v2

from atoken.core.errors import ModalityInputError
from atoken.modalities.mesh.views import Views

__all__ = ["Voxels", "surface_points", "voxelize"]


def _check_voxels(instance: Voxels, attribute: Any, value: Any) -> None:
    coords, patches, r = instance.coords, instance.patches, instance.resolution
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ModalityInputError(f"voxels: resolution must be an int >= 1, got {r!r}")
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ModalityInputError(f"voxels: coords must be [n, 3], got {tuple(coords.shape)}")
    if patches.ndim != 4 or patches.shape[0] != coords.shape[0] or patches.shape[3] != 3:
        raise ModalityInputError(
            f"voxels: patches must be [n, p, p, 3] with n = {coords.shape[0]}, "
            f"got {tuple(patches.shape)}"
        )
    if patches.shape[1] != patches.shape[2]:
        raise ModalityInputError(f"voxels: patches must be square, got {tuple(patches.shape)}")
    if coords.numel() and (int(coords.min()) < 0 or int(coords.max()) >= r):
        raise ModalityInputError(f"voxels: coords must lie in [0, {r})")
    if not bool(torch.isfinite(patches).all()):
        raise ModalityInputError("voxels: patches must be finite")
    flat = _raster(coords, r)
    if flat.numel() and bool((flat[1:] <= flat[:-1]).any()):
        raise ModalityInputError("voxels: coords must be unique")


def _raster(coords: torch.Tensor, r: int) -> torch.Tensor:
    c = coords.long()
    return (c[:, 0] * r + c[:, 1]) * r + c[:, 2]  # [n]


@attrs.frozen(kw_only=True, eq=False)
class Voxels:
    """Active surface voxels of one asset and their RGB patches, sorted in raster order.

    Construct with :meth:`create` (sorts and checks); :meth:`as_tensor` is the canonical form
    that tests compare: ``[n, 3 + p * p * 3]`` (coords, then the patch values).
    """

    coords: torch.Tensor
    patches: torch.Tensor = attrs.field(validator=_check_voxels)
    resolution: int

    @classmethod
    def create(cls, coords: Any, patches: Any, resolution: int) -> Voxels:
        coords = torch.as_tensor(coords)
        patches = torch.as_tensor(patches).float()
        if coords.is_floating_point() or coords.is_complex():
            raise ModalityInputError(f"voxels: coords must be integers, got {coords.dtype}")
        if coords.ndim == 2 and coords.shape[1] == 3 and coords.shape[0] == patches.shape[0]:
            order = torch.argsort(_raster(coords, max(int(resolution), 1)))
            coords, patches = coords[order], patches[order]
        return cls(coords=coords.to(torch.int32), patches=patches, resolution=resolution)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[1])

    def centers(self) -> torch.Tensor:
        """Voxel centres in the unit cube ``[n, 3]``."""
        return (self.coords.float() + 0.5) / self.resolution - 0.5

    def colors(self) -> torch.Tensor:
        """The mean colour of each voxel's patch ``[n, 3]``."""
        return self.patches.mean(dim=(1, 2))

    def as_tensor(self) -> torch.Tensor:
        return torch.cat([self.coords.float(), self.patches.flatten(1)], dim=1)

    def __repr__(self) -> str:
        return f"Voxels(n={len(self)}, resolution={self.resolution}, patch={self.patch_size})"


def surface_points(views: Views) -> torch.Tensor:
    """World points ``[P, 3]`` of every pixel with depth > 0 (kornia's back-projection)."""
    cam = views.camera
    k = cam.intrinsics[:, :3, :3]  # [V, 3, 3]
    local = depth_to_3d_v2(views.depth, k)  # [V, H, W, 3] camera frame
    rot, t = cam.extrinsics[:, :3, :3], cam.extrinsics[:, :3, 3]  # world -> camera
    world = torch.einsum("vij,vhwi->vhwj", rot, local - t[:, None, None, :])  # R^T (x - t)
    return world[views.depth > 0]  # [P, 3]


def voxelize(views: Views, *, resolution: int = 64, patch_size: int = 16) -> Voxels:
    """The active voxels of ``views`` and each one's patch from its nearest view.

    Raises:
        ModalityInputError: no surface in any view (nothing to voxelise), or a patch larger
            than the images.
    """
    h, w = views.size
    if patch_size > min(h, w):
        raise ModalityInputError(f"mesh: patch {patch_size} is larger than the {h} x {w} views")
    points = surface_points(views)
    if points.shape[0] == 0:
        raise ModalityInputError("mesh: no visible surface in any view (all depth is 0)")
    r = resolution
    idx = ((points + 0.5) * r).floor().long().clamp(0, r - 1)  # [P, 3]
    flat = torch.unique((idx[:, 0] * r + idx[:, 1]) * r + idx[:, 2])  # [n] sorted
    coords = torch.stack([flat // (r * r), (flat // r) % r, flat % r], dim=1)  # [n, 3]
    centers = (coords.float() + 0.5) / r - 0.5  # [n, 3]
    cam = views.camera
    local = torch.einsum("vij,nj->vni", cam.extrinsics[:, :3, :3], centers)
    local = local + cam.extrinsics[:, None, :3, 3]  # [V, n, 3]
    z = local[..., 2]
    u = cam.fx[:, None] * local[..., 0] / z + cam.cx[:, None]  # [V, n]
    v = cam.fy[:, None] * local[..., 1] / z + cam.cy[:, None]
    inside = (z > 0) & (u > -0.5) & (u < w - 0.5) & (v > -0.5) & (v < h - 0.5)
    view = torch.where(inside, z, torch.full_like(z, float("inf"))).argmin(0)  # [n]
    at = torch.arange(coords.shape[0])
    col, row = u[view, at].round().long(), v[view, at].round().long()  # [n]
    p, half = patch_size, patch_size // 2
    image = views.rgb.permute(0, 2, 3, 1)  # [V, H, W, 3]
    padded = torch.nn.functional.pad(image, (0, 0, p, p, p, p))  # [V, H + 2p, W + 2p, 3]
    offs = torch.arange(p) - half  # [p]
    rows = (row[:, None] + offs + p).clamp(0, h + 2 * p - 1)  # [n, p]
    cols = (col[:, None] + offs + p).clamp(0, w + 2 * p - 1)
    patches = padded[view[:, None, None], rows[:, :, None], cols[:, None, :]]  # [n, p, p, 3]
    return Voxels.create(coords, patches, r)
