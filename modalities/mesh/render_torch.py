"""The ``torch`` Gaussian renderer: the reference, in plain PyTorch with autograd.

Shapes: GaussianSet of G -> per view, per 16 x 16 tile: pixels [P, 2] x the tile's Gaussians
[n] in depth order -> alpha [P, n] -> transmittance [P, n] -> colour [P, 3]; RenderOutput rgb
[V, 3, H, W], alpha [V, H, W].

It implements the image formation of :mod:`.splat` literally (dense per tile, no early exit
in the arithmetic, the 1e-4 stop as a mask), so it is the oracle the fast renderer is tested
against. Memory grows with pixels x Gaussians per tile; use it for tests and small scenes.
"""

from __future__ import annotations

import torch
from kornia.geometry.camera import PinholeCamera

from atoken.modalities.mesh.gaussians import GaussianSet
from atoken.modalities.mesh.splat import ALPHA_MAX, ALPHA_MIN, T_MIN, Splats, ViewRenderer, project

__all__ = ["TorchRenderer", "composite_tile"]


def composite_tile(
    pixels: torch.Tensor, splats: Splats, ids: torch.Tensor, background: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``[P, 2]`` (u, v) composited over Gaussians ``ids [n]`` (front to back) ->
    colour ``[P, 3]`` and accumulated alpha ``[P]``."""
    d = pixels[:, None, :] - splats.mean2d[ids][None]  # [P, n, 2]
    a, b, c = splats.conic[ids].unbind(-1)  # [n] each
    power = -0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) - b * d[..., 0] * d[..., 1]
    alpha = (splats.opacity[ids] * torch.exp(power)).clamp_max(ALPHA_MAX)  # [P, n]
    alpha = torch.where((power > 0) | (alpha < ALPHA_MIN), torch.zeros_like(alpha), alpha)
    kept = torch.cumprod(1 - alpha, dim=1) >= T_MIN  # the 1e-4 stop, as a mask
    alpha = alpha * kept
    trans = torch.cumprod(1 - alpha, dim=1)  # [P, n] inclusive
    excl = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
    weight = alpha * excl  # [P, n]
    rgb = weight @ splats.color[ids] + trans[:, -1:] * background  # [P, 3]
    return rgb, 1 - trans[:, -1]


class TorchRenderer(ViewRenderer):
    """The reference Gaussian rasterizer (autograd, any dtype and device).

    Args:
        tile: tile side in pixels (Gaussians are listed per tile).
        blur: pixels^2 added to every 2D covariance (3DGS' 0.3).
        background: the colour behind the Gaussians, a gray level or RGB triple.
    """

    def _background(self, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.background, dtype=like.dtype, device=like.device).expand(3)

    def render_view(self, gaussians: GaussianSet, camera: PinholeCamera, view: int):
        """One view -> ``(rgb [3, H, W], alpha [H, W])``."""
        splats = project(gaussians, camera, view, blur=self.blur)
        h, w, t = splats.height, splats.width, self.tile
        like = gaussians.means
        bg = self._background(like)
        order = splats.order()
        u, v = splats.mean2d.detach()[order].unbind(-1)
        r = splats.radius[order].to(like.dtype)
        rgb = bg[:, None, None].repeat(1, h, w).clone()  # [3, H, W]
        alpha = torch.zeros(h, w, dtype=like.dtype, device=like.device)
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                hit = (u + r >= x0) & (u - r <= x1 - 1) & (v + r >= y0) & (v - r <= y1 - 1)
                ids = order[hit]
                if ids.numel() == 0:
                    continue
                yy, xx = torch.meshgrid(
                    torch.arange(y0, y1, dtype=like.dtype, device=like.device),
                    torch.arange(x0, x1, dtype=like.dtype, device=like.device),
                    indexing="ij",
                )
                pixels = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)  # [P, 2]
                color, acc = composite_tile(pixels, splats, ids, bg)
                rgb[:, y0:y1, x0:x1] = color.T.reshape(3, y1 - y0, x1 - x0)
                alpha[y0:y1, x0:x1] = acc.reshape(y1 - y0, x1 - x0)
        return rgb, alpha
