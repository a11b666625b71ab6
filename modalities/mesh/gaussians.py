"""3D Gaussians: the official per-voxel parameterisation and the 3DGS PLY file layout.

Shapes (n voxels of an R^3 grid, K Gaussians per voxel, G = n * K):
    raw       [n, 14 K] a head's output, blocks in the official order
              xyz [K, 3] | features_dc [K, 3] | scaling [K, 3] | rotation [K, 4] | opacity [K]
    means     [G, 3] centres in the unit cube [-0.5, 0.5]^3
    scales    [G, 3] standard deviations along the Gaussian's own axes (> 0)
    quats     [G, 4] unit quaternions (w, x, y, z)
    opacities [G]    in (0, 1)
    sh0       [G, 3] spherical-harmonic degree-0 colour coefficients; RGB = 0.5 + C0 * sh0

Activations (``decoder_gs.py`` of the official release and TRELLIS' ``GaussianModel``):
centre = voxel centre + tanh(raw + perturbation) * 0.75 / R with a fixed Hammersley
perturbation per Gaussian index; scale = softplus(raw + softplus^-1(s0)) with the 3D filter
sqrt(s^2 + f^2); rotation = normalize(0.1 raw + [1, 0, 0, 0]); opacity = sigmoid(raw +
logit(0.1)). s0 = 0.004 and f = 9e-4 at R = 64 (the official values), scaled by 64 / R so a
coarser grid gets proportionally larger Gaussians.
"""

from __future__ import annotations

import math
import os
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from atoken.core.errors import ModalityInputError

__all__ = [
    "SH_C0",
    "GaussianSet",
    "activate",
    "baseline_gaussians",
    "hammersley",
    "offset_perturbation",
]

#: The degree-0 spherical-harmonic constant, 1 / (2 sqrt(pi)).
SH_C0 = 0.28209479177387814
#: Half the span of a voxel's Gaussian centres, in voxels (official ``voxel_size`` 1.5 / 2).
OFFSET_SPAN = 0.75
SCALE_INIT, SCALE_FLOOR, OPACITY_INIT = 0.004, 9e-4, 0.1
_PRIMES = (2, 3, 5, 7, 11, 13)


def _radical_inverse(base: int, n: int) -> float:
    out, inv = 0.0, 1.0 / base
    while n > 0:
        out += (n % base) * inv
        n //= base
        inv /= base
    return out


def hammersley(count: int, dims: int = 3) -> torch.Tensor:
    """The Hammersley point set ``[count, dims]`` in [0, 1): (i / count, phi_2(i), phi_3(i))."""
    rows = [
        [i / count] + [_radical_inverse(_PRIMES[d], i) for d in range(dims - 1)]
        for i in range(count)
    ]
    return torch.tensor(rows, dtype=torch.float64).float()


def offset_perturbation(count: int) -> torch.Tensor:
    """The fixed raw-offset perturbation ``[K, 3]``: at a zero raw offset, a voxel's K
    centres are the Hammersley points spread over the voxel (they may move 0.75 voxel from
    its centre)."""
    h = hammersley(count).double()
    return torch.atanh((h * 2 - 1) / (2 * OFFSET_SPAN)).float()


def activate(
    raw: torch.Tensor,
    coords: torch.Tensor,
    resolution: int,
    perturbation: torch.Tensor,
    *,
    scale_init: float | None = None,
    scale_floor: float | None = None,
) -> GaussianSet:
    """A head's raw output ``[n, 14 K]`` for voxels ``coords [n, 3]`` -> the Gaussians.

    ``scale_init`` and ``scale_floor`` (the softplus bias target s0 and the 3D filter f) default
    to the official 0.004 and 9e-4 scaled by 64 / R; pass them to use absolute values, as the
    official Gaussian decoder does at any resolution.
    """
    k = perturbation.shape[0]
    n = raw.shape[0]
    if raw.ndim != 2 or raw.shape[1] != 14 * k:
        raise ModalityInputError(f"gaussians: raw must be [n, {14 * k}], got {tuple(raw.shape)}")
    raw = raw.float()
    xyz, dc, scaling, rotation, opacity = raw.split([3 * k, 3 * k, 3 * k, 4 * k, k], dim=1)
    r = float(resolution)
    center = (coords.float() + 0.5) / r - 0.5  # [n, 3]
    offset = torch.tanh(xyz.reshape(n, k, 3) + perturbation) * (OFFSET_SPAN / r)  # [n, K, 3]
    s0 = SCALE_INIT * 64 / r if scale_init is None else float(scale_init)
    floor = SCALE_FLOOR * 64 / r if scale_floor is None else float(scale_floor)
    scales = F.softplus(scaling.reshape(n, k, 3) + math.log(math.expm1(s0)))
    scales = torch.sqrt(scales.square() + floor**2)
    identity = raw.new_tensor([1.0, 0.0, 0.0, 0.0])
    quats = F.normalize(rotation.reshape(n, k, 4) * 0.1 + identity, dim=-1)
    logit0 = math.log(OPACITY_INIT / (1 - OPACITY_INIT))
    return GaussianSet(
        means=(center[:, None, :] + offset).reshape(n * k, 3),
        scales=scales.reshape(n * k, 3),
        quats=quats.reshape(n * k, 4),
        opacities=torch.sigmoid(opacity.reshape(n * k) + logit0),
        sh0=dc.reshape(n * k, 3),
    )


def _check(instance: GaussianSet, attribute: Any, value: Any) -> None:
    g = instance.means.shape[0]
    want = {"means": (g, 3), "scales": (g, 3), "quats": (g, 4), "opacities": (g,), "sh0": (g, 3)}
    for name, shape in want.items():
        t = getattr(instance, name)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ModalityInputError(f"gaussians: {name} must be {list(shape)}, got {got}")


@attrs.frozen(kw_only=True, eq=False)
class GaussianSet:
    """The 3D Gaussians of one asset (see the module docstring for shapes and units)."""

    means: torch.Tensor
    scales: torch.Tensor
    quats: torch.Tensor
    opacities: torch.Tensor
    sh0: torch.Tensor = attrs.field(validator=_check)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def colors(self) -> torch.Tensor:
        """RGB ``[G, 3]`` (0.5 + C0 * sh0, unclamped: the renderers clamp the image)."""
        return self.sh0 * SH_C0 + 0.5

    def set_rows(self) -> torch.Tensor:
        """The Gaussians as a set ``[G, 6]``: means and colours (what the set distances of
        :mod:`atoken.losses.sets`, ``chamfer`` and ``emd``, compare; ``dims = 3``: means)."""
        return torch.cat([self.means, self.colors], 1)

    def covariances(self) -> torch.Tensor:
        """``R S S^T R^T`` ``[G, 3, 3]``."""
        w, x, y, z = self.quats.unbind(-1)
        rot = torch.stack(
            [
                1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
            ],
            dim=-1,
        ).reshape(-1, 3, 3)  # fmt: skip
        m = rot * self.scales[:, None, :]  # R S
        return m @ m.transpose(1, 2)

    def as_tensor(self) -> torch.Tensor:
        """``[G, 14]``: means, scales, quats, opacity, sh0 (for comparisons)."""
        return torch.cat(
            [self.means, self.scales, self.quats, self.opacities[:, None], self.sh0], dim=1
        )

    def detach(self) -> GaussianSet:
        return GaussianSet(**{k: v.detach() for k, v in attrs.asdict(self, recurse=False).items()})

    def transformed(self, center: Any, scale: float) -> GaussianSet:
        """The Gaussians in the original mesh units (the inverse of the normalisation
        ``(x - center) * scale`` recorded in a mesh latent's meta)."""
        center_t = torch.as_tensor(center, dtype=self.means.dtype, device=self.means.device)
        return attrs.evolve(self, means=self.means / scale + center_t, scales=self.scales / scale)

    # ------------------------------------------------------------------ PLY
    def save_ply(self, path: str | os.PathLike) -> None:
        """Write the standard 3D Gaussian Splatting PLY (binary little endian; x y z, normals,
        f_dc_0..2, opacity as a logit, scale_0..2 as logs, rot_0..3 as w x y z), which splat
        viewers open."""
        from plyfile import PlyData, PlyElement

        names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
        names += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
        g = self.detach()
        op = g.opacities.double().clamp(1e-7, 1 - 1e-7)
        columns = torch.cat(
            [
                g.means.double(),
                torch.zeros(len(g), 3, dtype=torch.float64),
                g.sh0.double(),
                torch.log(op / (1 - op))[:, None],
                g.scales.double().log(),
                g.quats.double(),
            ],
            dim=1,
        ).numpy()
        rows = np.empty(len(g), dtype=[(n, "f4") for n in names])
        for i, name in enumerate(names):
            rows[name] = columns[:, i]
        PlyData([PlyElement.describe(rows, "vertex")], byte_order="<").write(os.fspath(path))

    @classmethod
    def load_ply(cls, path: str | os.PathLike) -> GaussianSet:
        """Read a 3DGS PLY (extra properties such as higher SH bands are ignored).

        Raises:
            ModalityInputError: a file that is not a PLY or lacks a 3DGS property.
        """
        from plyfile import PlyData, PlyParseError

        try:
            vertex = PlyData.read(os.fspath(path))["vertex"]
        except (OSError, KeyError, ValueError, IndexError, PlyParseError) as exc:
            raise ModalityInputError(f"gaussians: {os.fspath(path)!r} is not a 3DGS PLY") from exc

        def cols(*names: str) -> torch.Tensor:
            try:
                data = np.stack([np.asarray(vertex[n], dtype=np.float32) for n in names], 1)
            except ValueError as exc:
                raise ModalityInputError(f"gaussians: the PLY lacks {names}") from exc
            return torch.from_numpy(data)

        return cls(
            means=cols("x", "y", "z"),
            scales=cols("scale_0", "scale_1", "scale_2").exp(),
            quats=F.normalize(cols("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1),
            opacities=torch.sigmoid(cols("opacity")[:, 0]),
            sh0=cols("f_dc_0", "f_dc_1", "f_dc_2"),
        )

    def __repr__(self) -> str:
        return f"GaussianSet(n={len(self)})"


def baseline_gaussians(voxels: Any, *, sigma: float = 0.6, opacity: float = 0.95) -> GaussianSet:
    """The no-learning baseline: one isotropic Gaussian per active voxel at its centre, of
    standard deviation ``sigma`` voxels and opacity ``opacity``, coloured with the mean of the
    voxel's patch (:class:`~.voxelize.Voxels`)."""
    n = len(voxels)
    rgb = voxels.colors()  # [n, 3]
    return GaussianSet(
        means=voxels.centers(),
        scales=torch.full((n, 3), sigma / voxels.resolution),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone(),
        opacities=torch.full((n,), float(opacity)),
        sh0=(rgb - 0.5) / SH_C0,
    )
