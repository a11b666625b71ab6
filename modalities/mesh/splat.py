"""Projecting 3D Gaussians into a camera (EWA splatting), shared by every CPU renderer.

Shapes (G Gaussians, one view of H x W):
    mean2d   [G, 2] pixel coordinates (u column, v row; pixel centres are integers)
    conic    [G, 3] the inverse 2D covariance (a, b, c) = [[a, b], [b, c]]
    opacity  [G]
    color    [G, 3]
    depth    [G]    camera z
    radius   [G]    int pixels (0: culled); a Gaussian is read only within its square

The projection is differentiable (plain autograd); the rasterizers consume its output. The
image formation every renderer implements exactly (3DGS, Kerbl et al. 2023):

* Gaussians are composited front to back in order of camera depth (ties by index);
* at pixel p, alpha_i = min(0.99, o_i exp(-d^T conic d / 2)) with d = p - mean2d_i, and a
  Gaussian is skipped where alpha_i < 1/255;
* compositing stops before the Gaussian that would take the transmittance below 1e-4;
* color = sum_i alpha_i T_i c_i + T_final * background, T_i = prod_{j < i} (1 - alpha_j).

The radius is where alpha can still reach 1/255 (sqrt(2 ln(255 o)) standard deviations along
the major axis), so culling by it changes no pixel.
"""

from __future__ import annotations

import math

import attrs
import torch
from kornia.geometry.camera import PinholeCamera

from atoken.core.errors import ModalityInputError
from atoken.modalities.mesh.gaussians import GaussianSet

__all__ = [
    "ALPHA_MAX",
    "ALPHA_MIN",
    "NEAR",
    "T_MIN",
    "RenderOutput",
    "Splats",
    "ViewRenderer",
    "check_camera",
    "project",
]

ALPHA_MIN, ALPHA_MAX, T_MIN = 1 / 255, 0.99, 1e-4
#: Gaussians closer to the camera than this (camera z) are culled.
NEAR = 0.01


@attrs.frozen(kw_only=True)
class Splats:
    """One view's projected Gaussians (see the module docstring)."""

    mean2d: torch.Tensor
    conic: torch.Tensor
    opacity: torch.Tensor
    color: torch.Tensor
    depth: torch.Tensor
    radius: torch.Tensor
    height: int
    width: int

    def order(self) -> torch.Tensor:
        """Indices of the visible Gaussians (radius > 0), front to back."""
        visible = (self.radius > 0).nonzero()[:, 0]
        return visible[torch.argsort(self.depth.detach()[visible], stable=True)]


@attrs.frozen(kw_only=True)
class RenderOutput:
    """What a renderer returns for V views.

    Attributes:
        rgb: ``[V, 3, H, W]`` composited colour over the background.
        alpha: ``[V, H, W]`` accumulated opacity, 1 - T_final.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor


def check_camera(camera: PinholeCamera) -> tuple[int, int]:
    """``(H, W)`` of a camera batch whose views share one image size.

    Raises:
        ModalityInputError: not a kornia ``PinholeCamera``, or views of different sizes.
    """
    if not isinstance(camera, PinholeCamera):
        raise ModalityInputError(f"render: expected a kornia PinholeCamera, got {camera!r}")
    h, w = camera.height.unique(), camera.width.unique()
    if h.numel() != 1 or w.numel() != 1:
        raise ModalityInputError("render: every view of a camera batch must have one size")
    return int(h), int(w)


def project(
    gaussians: GaussianSet, camera: PinholeCamera, view: int, *, blur: float = 0.3
) -> Splats:
    """The Gaussians as 2D splats in view ``view`` of ``camera``; ``blur`` (pixels^2) is
    added to every 2D covariance, as 3DGS' low-pass filter."""
    h, w = check_camera(camera)
    if not math.isfinite(blur) or blur < 0:
        raise ModalityInputError(f"render: blur must be >= 0, got {blur}")
    ext = camera.extrinsics[view].to(gaussians.means)
    rot = ext[:3, :3]
    cam = gaussians.means @ rot.T + ext[:3, 3]  # [G, 3]
    x, y, z = cam.unbind(-1)
    visible = z > NEAR
    zs = torch.where(visible, z, torch.ones_like(z))
    fx, fy = float(camera.fx[view]), float(camera.fy[view])
    cx, cy = float(camera.cx[view]), float(camera.cy[view])
    mean2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)  # [G, 2]
    zeros = torch.zeros_like(zs)
    jac = torch.stack(
        [
            torch.stack([fx / zs, zeros, -fx * x / zs**2], -1),
            torch.stack([zeros, fy / zs, -fy * y / zs**2], -1),
        ],
        dim=1,
    )  # [G, 2, 3]
    m = jac @ rot  # [G, 2, 3]
    cov = m @ gaussians.covariances() @ m.transpose(1, 2)  # [G, 2, 2]
    a, b, c = cov[:, 0, 0] + blur, cov[:, 0, 1], cov[:, 1, 1] + blur
    det = (a * c - b * b).clamp_min(1e-12)
    conic = torch.stack([c / det, -b / det, a / det], dim=-1)  # [G, 3]
    opacity = gaussians.opacities
    with torch.no_grad():
        mid = (a + c) / 2
        major = mid + torch.sqrt((mid * mid - det).clamp_min(0))  # largest eigenvalue
        reach = torch.sqrt(2 * torch.log((255 * opacity).clamp_min(1)))  # std devs to 1/255
        radius = torch.ceil(reach * torch.sqrt(major)).long()
        u, v = mean2d[:, 0], mean2d[:, 1]
        on_image = (u + radius >= 0) & (u - radius <= w - 1) & (v + radius >= 0)
        on_image &= v - radius <= h - 1
        radius = torch.where(visible & on_image & (opacity >= ALPHA_MIN), radius, 0)
    return Splats(
        mean2d=mean2d,
        conic=conic,
        opacity=opacity,
        color=gaussians.colors,
        depth=z,
        radius=radius,
        height=h,
        width=w,
    )


class ViewRenderer:
    """What the CPU renderers share: checked settings, and ``__call__`` over the views of a
    camera batch through the subclass's ``render_view(gaussians, camera, i) -> (rgb, alpha)``.

    Args:
        tile: tile side in pixels.
        blur: pixels^2 added to every 2D covariance (3DGS' 0.3).
        background: the colour behind the Gaussians, a gray level or RGB triple.
    """

    default_tile = 16

    def __init__(self, *, tile: int | None = None, blur: float = 0.3, background: float = 0.0):
        tile = self.default_tile if tile is None else tile
        if not isinstance(tile, int) or tile < 1:
            raise ModalityInputError(f"render: tile must be an int >= 1, got {tile!r}")
        if not float(blur) >= 0:
            raise ModalityInputError(f"render: blur must be >= 0 pixels^2, got {blur!r}")
        self.tile, self.blur, self.background = tile, float(blur), background

    def render_view(self, gaussians: GaussianSet, camera: PinholeCamera, view: int):
        raise NotImplementedError

    def __call__(self, gaussians: GaussianSet, camera: PinholeCamera) -> RenderOutput:
        """Render every view of ``camera``: ``rgb [V, 3, H, W]``, ``alpha [V, H, W]``."""
        check_camera(camera)
        views = [self.render_view(gaussians, camera, i) for i in range(camera.batch_size)]
        return RenderOutput(
            rgb=torch.stack([c for c, _ in views]), alpha=torch.stack([a for _, a in views])
        )
