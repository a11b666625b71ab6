"""The built-in 3D modality family: meshes -> multi-view renders -> surface voxels -> tokens,
decoded to 3D Gaussians. (Its training side, which needs the data and task layers, is
:mod:`atoken.modalities.mesh.data`, the mesh store and the ``meshes`` source, and
:mod:`atoken.modalities.mesh.task`, the ``mesh_reconstruction`` task.)

A plugin like any other (registered through the same hooks as third-party ones):

* the modality ``mesh`` (:class:`MeshModality`; coords (0, x, y, z) in an R^3 grid, or
  (0, y, x, z) with the official packing: :mod:`atoken.modalities.mesh.axes`);
* the head ``gaussians`` (:class:`GaussianHead`), the modality's default head, and the head
  ``swin_gaussians`` (:class:`SwinGaussianHead`: the official patch layer and Gaussian decoder);
* the losses ``gaussian_opacity`` and ``gaussian_volume`` (regularisers of decoded sets);
* the renderers ``torch`` (:class:`TorchRenderer`, the reference), ``cpu``
  (:class:`CpuRenderer`, compiled tile kernels) and ``gsplat`` (:class:`GsplatRenderer`, CUDA).

Public names: :class:`Views` (RGB + depth + kornia cameras), :class:`Voxels` (the canonical
sample), :class:`GaussianSet` (with 3DGS PLY I/O), :func:`load_mesh`, :func:`render_views`,
:func:`voxelize`, :func:`sphere_cameras`, :func:`orbit_cameras`.
"""

from __future__ import annotations

from atoken.modalities.mesh.cameras import orbit_cameras, sphere_cameras
from atoken.modalities.mesh.gaussians import GaussianSet, baseline_gaussians
from atoken.modalities.mesh.head import GaussianHead
from atoken.modalities.mesh.losses import GaussianOpacityLoss, GaussianVolumeLoss
from atoken.modalities.mesh.meshes import NormalizedMesh, load_mesh
from atoken.modalities.mesh.modality import MeshModality
from atoken.modalities.mesh.render_cpu import CpuRenderer
from atoken.modalities.mesh.render_gsplat import GsplatRenderer
from atoken.modalities.mesh.render_torch import TorchRenderer
from atoken.modalities.mesh.swin_head import SWIN_GAUSSIANS, SwinGaussianHead
from atoken.modalities.mesh.views import Views, render_views
from atoken.modalities.mesh.voxelize import Voxels, voxelize
from atoken.plugins.hookspecs import hookimpl

__all__ = [
    "CpuRenderer",
    "GaussianHead",
    "GaussianOpacityLoss",
    "GaussianSet",
    "GaussianVolumeLoss",
    "GsplatRenderer",
    "MeshModality",
    "NormalizedMesh",
    "SwinGaussianHead",
    "TorchRenderer",
    "Views",
    "Voxels",
    "baseline_gaussians",
    "load_mesh",
    "orbit_cameras",
    "render_views",
    "sphere_cameras",
    "voxelize",
]


@hookimpl
def register_modalities(register) -> None:
    register("mesh", MeshModality)


@hookimpl
def register_heads(register) -> None:
    register("gaussians", GaussianHead)
    register(SWIN_GAUSSIANS, SwinGaussianHead)


@hookimpl
def register_renderers(register) -> None:
    register("torch", TorchRenderer)
    register("cpu", CpuRenderer)
    register("gsplat", GsplatRenderer)


@hookimpl
def register_losses(register) -> None:
    register("gaussian_opacity", GaussianOpacityLoss)
    register("gaussian_volume", GaussianVolumeLoss)
