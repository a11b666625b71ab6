"""The ``gsplat`` Gaussian renderer: gsplat's CUDA rasterizer, imported lazily like xformers.

Shapes: as every renderer (GaussianSet of G, camera batch of V views -> rgb [V, 3, H, W],
alpha [V, H, W]). It needs a CUDA device and ``pip install gsplat``; gsplat has no CPU
rasterizer, so on this kind of machine use ``cpu`` (the same image formation, checked against
the ``torch`` reference) and keep ``gsplat`` for GPU runs. Its 2D low-pass (``eps2d``) is our
``blur``; its tile culling differs from ours in details, so images agree closely, not to the
last bit.
"""

from __future__ import annotations

import torch
from kornia.geometry.camera import PinholeCamera

from atoken.core.errors import ModalityInputError
from atoken.modalities.mesh.gaussians import GaussianSet
from atoken.modalities.mesh.splat import NEAR, RenderOutput, check_camera

__all__ = ["GsplatRenderer"]


class GsplatRenderer:
    """gsplat's ``rasterization`` on CUDA tensors.

    Args:
        blur: gsplat's ``eps2d``, pixels^2 added to every 2D covariance.
        background: the colour behind the Gaussians, a gray level or RGB triple.
    """

    #: The renderer contract skips it on a machine without CUDA.
    requires_cuda = True

    def __init__(self, *, blur: float = 0.3, background: float = 0.0) -> None:
        self.blur, self.background = float(blur), background

    def __call__(self, gaussians: GaussianSet, camera: PinholeCamera) -> RenderOutput:
        h, w = check_camera(camera)
        try:
            from gsplat import rasterization
        except ImportError as exc:
            raise ModalityInputError(
                "render: the 'gsplat' renderer needs `pip install gsplat` and a CUDA device; "
                "on the CPU use renderer 'cpu'"
            ) from exc
        device = gaussians.means.device
        if device.type != "cuda":
            raise ModalityInputError(
                f"render: 'gsplat' rasterizes CUDA tensors only, got {device}; use 'cpu'"
            )
        v = camera.batch_size
        bg = torch.as_tensor(self.background, dtype=torch.float32, device=device).expand(v, 3)
        colors, alphas, _ = rasterization(
            means=gaussians.means,
            quats=gaussians.quats,
            scales=gaussians.scales,
            opacities=gaussians.opacities,
            colors=gaussians.colors,
            viewmats=camera.extrinsics.to(device),
            Ks=camera.intrinsics[:, :3, :3].to(device),
            width=w,
            height=h,
            near_plane=NEAR,
            eps2d=self.blur,
            backgrounds=bg,
        )  # [V, H, W, 3], [V, H, W, 1]
        return RenderOutput(rgb=colors.permute(0, 3, 1, 2), alpha=alphas[..., 0])
