"""The official renderer's settings, on atoken's ``cpu`` renderer (and the official renderer
itself where it runs, for comparison).

The official 3D evaluation renders a decoder's Gaussians with TRELLIS' ``GaussianRenderer`` on
mip-splatting's ``diff-gaussian-rasterization`` (CUDA only): 512 px, near 0.8, far 1.6, black
background, ``kernel_size`` 0.1, no supersampling. Its image formation differs from 3DGS'
(atoken's ``cpu`` renderer's default, ``blur`` 0.3) in its 2D filter, mip-splatting's: the
kernel is added to each projected covariance and the opacity is scaled to keep the splat's
integral, ``o * sqrt(det(S) / det(S + k I))`` (0 for a degenerate S); colours are clamped at 0
per Gaussian (3DGS' SH evaluation). Near and far set only the projection's depth range: 3DGS
culls nothing but Gaussians closer than 0.2, so they change no pixel of an asset in the unit
cube seen from radius 2.

:func:`official_render` is atoken's ``cpu`` renderer with that formation: per view, the
opacities are scaled by the filter's factor (from :func:`~atoken.modalities.mesh.splat.project`
at ``blur=0``) and the kernel is the renderer's ``blur``. What remains different from the CUDA
kernels: their splats reach 3 standard deviations rounded out to 16 px tiles, atoken's until
the alpha falls below 1/255; they clamp the projection's Jacobian at 1.3 x the field of view;
they compute in float32. :func:`official_rasterizer_render` runs the official rasterizer on
the same Gaussians and cameras (CUDA and ``diff_gaussian_rasterization`` of mip-splatting),
and :func:`official_renderer_missing` says why it cannot run here.

Shapes (G Gaussians, V views of H x W): rgb [V, 3, H, W], alpha [V, H, W].
"""

from __future__ import annotations

import importlib.util
import inspect
import math

import attrs
import torch
from kornia.geometry.camera import PinholeCamera

from atoken.core.errors import ModalityInputError
from atoken.modalities.mesh.cameras import sphere_cameras
from atoken.modalities.mesh.gaussians import SH_C0, GaussianSet
from atoken.modalities.mesh.render_cpu import CpuRenderer
from atoken.modalities.mesh.splat import RenderOutput, check_camera, project

__all__ = [
    "OFFICIAL_BACKGROUND",
    "OFFICIAL_FAR",
    "OFFICIAL_KERNEL_SIZE",
    "OFFICIAL_NEAR",
    "OFFICIAL_RENDER_SIZE",
    "mip_filter_scale",
    "official_cameras",
    "official_rasterizer_render",
    "official_render",
    "official_renderer_missing",
    "psnr",
]

#: The official renderer's settings (``decoder_gs.py``; TRELLIS ``GaussianRenderer``).
OFFICIAL_RENDER_SIZE, OFFICIAL_NEAR, OFFICIAL_FAR = 512, 0.8, 1.6
OFFICIAL_KERNEL_SIZE, OFFICIAL_BACKGROUND = 0.1, 0.0
_DET_MIN = 1e-6  # mip-splatting's floor of the 2D covariance's determinant


def official_cameras(views: int, *, size: int = OFFICIAL_RENDER_SIZE) -> PinholeCamera:
    """``views`` cameras at the official render size, on a sphere of radius 2 with a 40 degree
    field of view (TRELLIS' renders), looking at the unit cube."""
    return sphere_cameras(views, size, fov_degrees=40.0, radius=2.0)


def mip_filter_scale(
    gaussians: GaussianSet, camera: PinholeCamera, view: int, kernel_size: float
) -> torch.Tensor:
    """mip-splatting's opacity factor ``[G]`` of each Gaussian in view ``view``:
    ``sqrt(d0 / (d1 + 1e-6) + 1e-6)`` with ``d0 = max(1e-6, det S)``, ``d1 = max(1e-6,
    det(S + k I))`` and S the projected covariance; 0 where either is at its floor."""
    conic = project(gaussians, camera, view, blur=0.0).conic.double()  # [G, 3] = S^-1
    a, b, c = conic.unbind(-1)
    inv_det = (a * c - b * b).clamp_min(1e-300)  # det(S^-1) = 1 / det S
    sa, sb, sc = c / inv_det, -b / inv_det, a / inv_det  # S = [[sa, sb], [sb, sc]]
    det0 = (sa * sc - sb * sb).clamp_min(_DET_MIN)
    det1 = ((sa + kernel_size) * (sc + kernel_size) - sb * sb).clamp_min(_DET_MIN)
    scale = torch.sqrt(det0 / (det1 + 1e-6) + 1e-6)
    degenerate = (det0 <= _DET_MIN) | (det1 <= _DET_MIN)
    return torch.where(degenerate, torch.zeros_like(scale), scale).to(gaussians.opacities)


def official_render(
    gaussians: GaussianSet,
    camera: PinholeCamera,
    *,
    kernel_size: float = OFFICIAL_KERNEL_SIZE,
    background: float = OFFICIAL_BACKGROUND,
) -> RenderOutput:
    """Render every view of ``camera`` with the official image formation (module docstring)
    on atoken's ``cpu`` renderer: ``rgb [V, 3, H, W]`` (unclamped), ``alpha [V, H, W]``."""
    check_camera(camera)
    if not kernel_size >= 0:
        raise ModalityInputError(f"render: kernel_size must be >= 0, got {kernel_size}")
    renderer = CpuRenderer(blur=kernel_size, background=background)
    colors = gaussians.colors.clamp_min(0)  # [G, 3]: 3DGS clamps each Gaussian's colour at 0
    clamped = attrs.evolve(gaussians, sh0=(colors - 0.5) / SH_C0)
    rgbs, alphas = [], []
    for view in range(camera.batch_size):
        scale = mip_filter_scale(gaussians, camera, view, kernel_size)  # [G]
        filtered = attrs.evolve(clamped, opacities=clamped.opacities * scale)
        rgb, alpha = renderer.render_view(filtered, camera, view)
        rgbs.append(rgb)
        alphas.append(alpha)
    return RenderOutput(rgb=torch.stack(rgbs), alpha=torch.stack(alphas))


def official_renderer_missing() -> str | None:
    """Why :func:`official_rasterizer_render` cannot run here (None: it can): it needs a CUDA
    device and mip-splatting's ``diff_gaussian_rasterization`` (its settings take
    ``kernel_size`` and ``subpixel_offset``)."""
    if importlib.util.find_spec("diff_gaussian_rasterization") is None:
        return "diff_gaussian_rasterization (mip-splatting's, CUDA) is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (the official rasterizer runs on CUDA only)"
    from diff_gaussian_rasterization import GaussianRasterizationSettings

    fields = set(inspect.signature(GaussianRasterizationSettings).parameters)
    if not {"kernel_size", "subpixel_offset"} <= fields:
        return "the installed diff_gaussian_rasterization is not mip-splatting's (no kernel_size)"
    return None


def _projection(near: float, far: float, tan_x: float, tan_y: float) -> torch.Tensor:
    """3DGS' OpenGL-style projection ``[4, 4]`` (``getProjectionMatrix``), z forward."""
    top, right = tan_y * near, tan_x * near
    p = torch.zeros(4, 4)
    p[0, 0], p[1, 1] = near / right, near / top
    p[3, 2] = 1.0
    p[2, 2] = far / (far - near)
    p[2, 3] = -(far * near) / (far - near)
    return p


def official_rasterizer_render(
    gaussians: GaussianSet,
    camera: PinholeCamera,
    *,
    near: float = OFFICIAL_NEAR,
    far: float = OFFICIAL_FAR,
    kernel_size: float = OFFICIAL_KERNEL_SIZE,
    background: float = OFFICIAL_BACKGROUND,
) -> RenderOutput:
    """The same views through the official rasterizer (mip-splatting's
    ``diff_gaussian_rasterization`` on CUDA, as TRELLIS' ``GaussianRenderer`` calls it: SH
    degree 0, zero sub-pixel offsets); ``rgb [V, 3, H, W]`` on the CPU, alpha not given by
    the rasterizer (ones).

    Raises:
        ModalityInputError: it cannot run here (:func:`official_renderer_missing`), or a
            camera whose principal point is not the image centre (3DGS assumes it).
    """
    missing = official_renderer_missing()
    if missing is not None:
        raise ModalityInputError(f"render: the official rasterizer cannot run: {missing}")
    from diff_gaussian_rasterization import GaussianRasterizationSettings, GaussianRasterizer

    h, w = check_camera(camera)
    dev = torch.device("cuda")
    g = gaussians.detach()
    means, scales, quats = g.means.to(dev), g.scales.to(dev), g.quats.to(dev)
    opacities = g.opacities.to(dev)[:, None]  # [G, 1]
    shs = g.sh0.to(dev)[:, None, :]  # [G, 1, 3]: SH degree 0
    bg = torch.full((3,), float(background), device=dev)
    rgbs = []
    for view in range(camera.batch_size):
        fx, fy = float(camera.fx[view]), float(camera.fy[view])
        cx, cy = float(camera.cx[view]), float(camera.cy[view])
        if abs(cx - (w - 1) / 2) > 1e-3 or abs(cy - (h - 1) / 2) > 1e-3:
            raise ModalityInputError("render: the official rasterizer needs a centred camera")
        tan_x, tan_y = w / (2 * fx), h / (2 * fy)
        view_t = camera.extrinsics[view].float().T.contiguous()  # 3DGS keeps it transposed
        full = view_t @ _projection(near, far, tan_x, tan_y).T
        settings = GaussianRasterizationSettings(
            image_height=h,
            image_width=w,
            tanfovx=tan_x,
            tanfovy=tan_y,
            kernel_size=kernel_size,
            subpixel_offset=torch.zeros(h, w, 2, device=dev),
            bg=bg,
            scale_modifier=1.0,
            viewmatrix=view_t.to(dev),
            projmatrix=full.to(dev),
            sh_degree=0,
            campos=torch.linalg.inv(view_t)[3, :3].to(dev),
            prefiltered=False,
            debug=False,
        )
        out = GaussianRasterizer(raster_settings=settings)(
            means3D=means,
            means2D=torch.zeros_like(means),
            shs=shs,
            colors_precomp=None,
            opacities=opacities,
            scales=scales,
            rotations=quats,
            cov3D_precomp=None,
        )
        rgbs.append(out[0].float().cpu())  # [3, H, W]
    rgb = torch.stack(rgbs)
    return RenderOutput(rgb=rgb, alpha=torch.ones(rgb.shape[0], h, w))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two renders clamped to [0, 1] (inf when equal)."""
    mse = float(((a.clamp(0, 1).double() - b.clamp(0, 1).double()) ** 2).mean())
    return math.inf if mse == 0 else -10 * math.log10(mse)
