"""The ``cpu`` Gaussian renderer: compiled tile kernels with a hand-written backward (numba).

Shapes (G Gaussians, T tiles of 16 x 16 pixels, M tile-Gaussian entries, one view H x W):
    tile lists   offsets int64 [T + 1], ids int64 [M] (each tile's Gaussians, front to back)
    forward      rgb [H, W, 3], final transmittance [H, W], contributors' end int64 [H, W]
    backward     per-entry gradients [M, 9] (mean2d 2, conic 3, opacity 1, colour 3), summed
                 into the G Gaussians; nothing per pixel-Gaussian pair is ever stored

The projection (:func:`.splat.project`) stays in PyTorch, so gradients reach means, scales,
rotations, opacities and colours through autograd; only rasterization is compiled. Tiles run
in parallel (``numba.prange``); each pixel walks its tile's list front to back and stops once
the transmittance would fall below 1e-4 (the image formation of :mod:`.splat`, exactly as the
``torch`` reference computes it); the backward walks the same list back to front from the last
contributor, recovering each transmittance by division (3DGS' backward). Kernels compute in
float64 and are compiled on first use (cached on disk when the package folder is writable).
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.camera import PinholeCamera

from atoken.core.errors import ModalityInputError
from atoken.modalities.mesh.gaussians import GaussianSet
from atoken.modalities.mesh.splat import Splats, ViewRenderer, project

__all__ = ["CpuRenderer", "has_numba"]


def has_numba() -> bool:
    """Whether numba (the kernels' compiler) is importable."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _kernels():
    """The compiled kernels (:mod:`._cpu_kernels`), imported on first use."""
    if not has_numba():
        raise ModalityInputError("render: the 'cpu' renderer needs `pip install numba`")
    from atoken.modalities.mesh import _cpu_kernels

    return _cpu_kernels


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float64).numpy())


class _Rasterize(torch.autograd.Function):
    """(mean2d, conic, opacity, colour) of one view -> (rgb [3, H, W], alpha [H, W])."""

    @staticmethod
    def forward(ctx, mean2d, conic, opacity, color, background, plan):
        k = _kernels()
        offsets, ids, h, w, tile, tiles_x = plan
        arrays = [_np(mean2d), _np(conic), _np(opacity), _np(color), _np(background)]
        rgb, final_t, end = k.forward(*arrays, offsets, ids, h, w, tile, tiles_x)
        ctx.save_for_backward(mean2d)
        ctx.state = (arrays, offsets, ids, final_t, end, tile, tiles_x)
        out = torch.from_numpy(rgb).to(mean2d).permute(2, 0, 1).contiguous()  # [3, H, W]
        return out, torch.from_numpy(1 - final_t).to(mean2d)

    @staticmethod
    def backward(ctx, d_rgb, d_alpha):
        (mean2d,) = ctx.saved_tensors
        arrays, offsets, ids, final_t, end, tile, tiles_x = ctx.state
        grads = _kernels().backward(
            *arrays,
            offsets,
            ids,
            final_t,
            end,
            _np(d_rgb.permute(1, 2, 0)),
            _np(d_alpha),
            tile,
            tiles_x,
        )
        total = torch.zeros(mean2d.shape[0], 9, dtype=torch.float64)
        total.index_add_(0, torch.from_numpy(ids), torch.from_numpy(grads))
        total = total.to(mean2d)
        return total[:, 0:2], total[:, 2:5], total[:, 5], total[:, 6:9], None, None


class CpuRenderer(ViewRenderer):
    """The fast CPU Gaussian rasterizer (same arguments and output as the ``torch`` one).

    Args:
        tile: tile side in pixels (8: smaller tiles mean shorter lists per pixel; 2x
            faster than 16 for voxel-sized Gaussians at 128 px).
        blur: pixels^2 added to every 2D covariance.
        background: the colour behind the Gaussians, a gray level or RGB triple.
    """

    default_tile = 8  # shorter lists per pixel: 2x faster than 16 for voxel-sized Gaussians

    def _plan(self, splats: Splats) -> tuple:
        h, w, t = splats.height, splats.width, self.tile
        tiles_x, tiles_y = -(-w // t), -(-h // t)
        offsets, ids = _kernels().bin_tiles(
            _np(splats.mean2d), splats.radius.cpu().numpy().astype(np.int64),
            splats.order().cpu().numpy().astype(np.int64), t, tiles_x, tiles_y,
        )  # fmt: skip
        return offsets, ids, h, w, t, tiles_x

    def render_view(self, gaussians: GaussianSet, camera: PinholeCamera, view: int):
        """One view -> ``(rgb [3, H, W], alpha [H, W])``."""
        splats = project(gaussians, camera, view, blur=self.blur)
        bg = torch.as_tensor(self.background, dtype=torch.float64).expand(3)
        return _Rasterize.apply(
            splats.mean2d, splats.conic, splats.opacity, splats.color, bg, self._plan(splats)
        )
