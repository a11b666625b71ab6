"""The ``mesh`` modality: 3D assets as surface voxels whose features are RGB patches (t = 0).

Shapes (n active voxels of an R^3 grid, patch p, temporal patch pt):
    values  float32 [n, pt * p * p * 3] laid out (pt, ph, pw, c): the voxel's patch fills
            temporal slot 0 like an image patch, slots 1..pt-1 are zero
    coords  int32 [n, 4] = (0, x, y, z), the voxel index; (0, y, x, z) with the official
            packing (see :mod:`.axes`)
    meta    {"resolution": R, "patch": p} (+ "center", "scale" of the mesh's normalisation;
            + "axes": "yxz" with the official packing)

A raw sample is one of (each turned into the next):

1. a mesh file (OBJ, PLY, GLB/glTF 2, ... via trimesh), a ``trimesh.Trimesh`` or ``Scene``:
   normalised to [-0.5, 0.5]^3 and rendered from ``views`` cameras on a sphere;
2. :class:`~.views.Views` (RGB + depth + kornia cameras, rendered or the user's own), or the
   official multi-view layout (a folder with ``transforms.json``, or the
   :class:`~.official_layout.OfficialViews` read from one);
3. :class:`~.voxelize.Voxels` (active voxels and their patches), the canonical form:
   ``unpatchify`` returns it and ``unpatchify(*patchify(v))`` equals ``v`` exactly; a
   :class:`atoken.modalities.mesh.data.MeshRecord` gives its voxels.

Two packings turn views into voxels. ``packing="atoken"`` (the default) is
:func:`~.voxelize.voxelize`. ``packing="official"`` is the official release's
``pack_multiview_feat.py`` (:func:`~.official_packing.voxel_features`, its
features through float16 as the script stores them), with the official coordinate axes and the
2D position table on: what a tokenizer converted from the official weights needs to encode a
3D asset as the official encoder does (``Tokenizer.from_official`` sets it).

The default head is ``gaussians`` (K 3D Gaussians per voxel, :mod:`.gaussians`); the
``pixels`` head decodes the patches back to :class:`Voxels`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from atoken.core.errors import ModalityInputError, TooManyTokensError
from atoken.core.modality import Modality, check_positive_ints, rgb_stats
from atoken.modalities.mesh.axes import AXES_KEY, sample_axes, to_columns, voxel_xyz
from atoken.modalities.mesh.cameras import sphere_cameras
from atoken.modalities.mesh.meshes import NormalizedMesh, load_mesh
from atoken.modalities.mesh.official_packing import voxel_features
from atoken.modalities.mesh.official_views import (
    is_official_folder,
    is_official_views,
    official_folder_views,
    to_official_views,
)
from atoken.modalities.mesh.views import MESH_RENDERERS, Views, render_views
from atoken.modalities.mesh.voxelize import Voxels, voxelize

if TYPE_CHECKING:
    from atoken.modalities.mesh.data import MeshSamples

__all__ = ["PACKINGS", "MeshModality"]

#: The ways views become voxels (see the module docstring).
PACKINGS = ("atoken", "official")
#: The image side the official packing cuts its 16 x 16 patch grid from.
OFFICIAL_IMAGE_SIZE = 256


class MeshModality(Modality):
    """3D assets as voxels of an R^3 grid with RGB patch features.

    Args:
        patch_size, temporal_patch: the encoder's patch (p) and temporal patch (pt).
        input_mean, input_std: the encoder's per-channel normalisation of [0, 1] RGB.
        resolution: the voxel grid side R (64 official; 32 or less for CPU tests).
        views: cameras rendered per mesh (16 official), on a Fibonacci sphere.
        render_size: square render side in pixels (256 official; 128 for the CPU config).
        fov_degrees, radius: the cameras' field of view and distance (40 degrees, 2).
        renderer: ``"auto"``, ``"embree"`` or ``"torch"`` (see :func:`.views.render_views`).
        max_tokens: the most active voxels one sample may have.
        packing: ``"atoken"`` or ``"official"`` (see the module docstring); the official one
            also turns the encoder's 2D position table on for this modality. It decides how
            views become voxels: ready-made :class:`Voxels` (and stored records) are encoded
            as they are, at this packing's axes.
    """

    name = "mesh"
    layout = "xyz"
    sample_ndim = 0  # samples are objects (meshes, views, voxels), never a batch tensor
    uses_pos_table = False  # voxels are placed by the 4D RoPE alone (atoken's packing)
    official_params: ClassVar[Mapping[str, Any]] = MappingProxyType({"packing": "official"})
    default_head = "gaussians"
    shared_pixel_path = True  # a voxel's features are an RGB patch: the shared patch embedding
    #: Files ``atoken reconstruct`` hands to this modality as they are (see
    #: :meth:`save_reconstruction`).
    file_extensions: ClassVar[tuple[str, ...]] = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")
    sample_kind = "asset"  # a mesh file's path (or loaded mesh): read by patchify itself
    folder_kind = "folders of views in the official 3D layout (with transforms.json)"

    def reads(self, path: str | Any) -> bool:
        """Mesh files (``file_extensions``) and folders in the official multi-view layout."""
        return super().reads(path) or is_official_folder(path)

    def load(self, path: str | Any) -> str:
        """A mesh file (or a folder of official views) is its own sample: its path
        (``patchify`` renders and voxelizes it)."""
        return str(path)

    def __init__(
        self,
        *,
        patch_size: int = 16,
        temporal_patch: int = 4,
        input_mean: Sequence[float] = (0.5, 0.5, 0.5),
        input_std: Sequence[float] = (0.5, 0.5, 0.5),
        resolution: int = 64,
        views: int = 16,
        render_size: int = 256,
        fov_degrees: float = 40.0,
        radius: float = 2.0,
        renderer: str = "auto",
        max_tokens: int = 65536,
        packing: str = "atoken",
    ) -> None:
        check_positive_ints(
            "mesh",
            patch_size=patch_size,
            temporal_patch=temporal_patch,
            resolution=resolution,
            views=views,
            render_size=render_size,
            max_tokens=max_tokens,
        )
        if packing not in PACKINGS:
            raise ModalityInputError(f"mesh: packing must be one of {PACKINGS}, got {packing!r}")
        if packing == "official" and OFFICIAL_IMAGE_SIZE % patch_size:
            raise ModalityInputError(
                f"mesh: the official packing cuts {OFFICIAL_IMAGE_SIZE} px images into patches: "
                f"patch_size {patch_size} does not divide it"
            )
        if renderer not in MESH_RENDERERS:
            raise ModalityInputError(f"mesh: renderer must be one of {MESH_RENDERERS}")
        if patch_size > render_size:
            raise ModalityInputError(f"mesh: patch_size {patch_size} > render_size {render_size}")
        self.value_mean, self.value_std = rgb_stats("mesh", input_mean, input_std)
        self.patch_size, self.temporal_patch = patch_size, temporal_patch
        self.resolution, self.views, self.render_size = resolution, views, render_size
        self.fov_degrees, self.radius = float(fov_degrees), float(radius)
        self.renderer, self.max_tokens = renderer, max_tokens
        self.packing = packing
        self.axes = "yxz" if packing == "official" else "xyz"
        # the official encoder adds its learned 2D table to voxels too (``pe_mode: joint``)
        self.uses_pos_table = packing == "official"
        self.value_dim = temporal_patch * patch_size * patch_size * 3
        sphere_cameras(views, render_size, fov_degrees=fov_degrees, radius=radius)  # validates

    @property
    def content_dim(self) -> int:
        return self.patch_size * self.patch_size * 3

    # ------------------------------------------------------------------ raw samples
    def cameras(self) -> Any:
        """The modality's V cameras (a kornia ``PinholeCamera`` batch)."""
        return sphere_cameras(
            self.views, self.render_size, fov_degrees=self.fov_degrees, radius=self.radius
        )

    def render(self, sample: Any) -> tuple[Views, NormalizedMesh]:
        """A mesh sample (file, trimesh) -> its views from :meth:`cameras` and the normalised
        mesh."""
        mesh = load_mesh(sample)
        return render_views(mesh.mesh, self.cameras(), renderer=self.renderer), mesh

    def voxels(self, sample: Any) -> tuple[Voxels, dict[str, Any]]:
        """Any raw sample -> its :class:`Voxels` and extra meta (the mesh normalisation)."""
        if isinstance(getattr(sample, "voxels", None), Voxels):  # a stored record
            normalised = hasattr(sample, "center") and hasattr(sample, "scale")
            extra = {"center": list(sample.center), "scale": sample.scale} if normalised else {}
            return sample.voxels, extra
        if isinstance(sample, Voxels):
            return sample, {}
        extra: dict[str, Any] = {}
        sample = official_folder_views(sample)
        if is_official_views(sample):
            views = sample if self.packing == "official" else sample.to_views()
        elif isinstance(sample, Views):
            views = sample
        else:
            views, mesh = self.render(sample)
            extra = {"center": list(mesh.center), "scale": mesh.scale}
        return self.pack_views(views), extra

    def pack_views(self, views: Any) -> Voxels:
        """:class:`Views` (or, for the official packing, official views) -> :class:`Voxels`,
        by this modality's packing."""
        if self.packing == "atoken":
            return voxelize(views, resolution=self.resolution, patch_size=self.patch_size)
        official = views if is_official_views(views) else to_official_views(views)
        packed = voxel_features(
            official,
            resolution=self.resolution,
            image_size=OFFICIAL_IMAGE_SIZE,
            patch_size=self.patch_size,
            generator=torch.Generator().manual_seed(0),  # the same voxels on every call
        )
        p = self.patch_size
        stored = packed.feats.half().float()  # [M, p * p * 3] as the script stores them
        return Voxels.create(packed.coords, stored.reshape(len(packed), p, p, 3), self.resolution)

    # ------------------------------------------------------------------ the contract
    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        voxels, extra = self.voxels(sample)
        p, pt = self.patch_size, self.temporal_patch
        if voxels.patch_size != p:
            raise ModalityInputError(f"mesh: voxel patches are {voxels.patch_size} px, not {p}")
        n = len(voxels)
        if n > self.max_tokens:
            raise TooManyTokensError(f"mesh: {n} active voxels > max_tokens={self.max_tokens}")
        values = torch.zeros(n, pt, p * p * 3)
        values[:, 0] = voxels.patches.reshape(n, p * p * 3)  # slot 0, (ph, pw, c)
        coords = torch.zeros(n, 4, dtype=torch.int32)
        coords[:, 1:] = to_columns(voxels.coords, self.axes)  # (0, x, y, z) or (0, y, x, z)
        meta = {"resolution": voxels.resolution, "patch": p, **extra}
        if self.axes != "xyz":
            meta[AXES_KEY] = self.axes
        return values.reshape(n, self.value_dim), coords, meta

    def unpatchify(
        self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]
    ) -> Voxels:
        p = int(meta["patch"])
        n = values.shape[0]
        if values.ndim != 2 or values.shape[1] < p * p * 3:
            raise ModalityInputError(f"mesh: values must be [n, >= {p * p * 3}]")
        patches = values[:, : p * p * 3].reshape(n, p, p, 3)  # slot 0
        xyz = voxel_xyz(coords[:, 1:], sample_axes(meta))  # [n, 3]
        return Voxels.create(xyz, patches, int(meta["resolution"]))

    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        r = int(meta["resolution"])
        return r, r, r

    def examples(self, seed: int) -> list[Voxels]:
        g = torch.Generator().manual_seed(seed)
        r, p = self.resolution, self.patch_size
        out = []
        for n in (5, 11):
            flat = torch.randperm(r**3, generator=g)[: min(n, r**3)]
            coords = torch.stack([flat // (r * r), (flat // r) % r, flat % r], dim=1)
            levels = torch.randint(0, 256, (coords.shape[0], p, p, 3), generator=g)
            out.append(Voxels.create(coords, levels.float() / 255, r))
        return out

    def invalid_examples(self) -> list[Any]:
        import trimesh

        blank = Views(
            rgb=torch.zeros(1, 3, 32, 32),
            depth=torch.zeros(1, 32, 32),
            camera=sphere_cameras(1, 32),
        )
        point = trimesh.Trimesh(vertices=[[0.0, 0, 0]] * 3, faces=[[0, 1, 2]], process=False)
        small = Voxels.create(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, 2, 3), 4)
        return [
            3,
            "/no/such/mesh.obj",
            trimesh.Trimesh(),
            point,
            blank,
            small,
        ]

    # ------------------------------------------------------------------ files
    @classmethod
    def open_store(cls, path: str | os.PathLike) -> MeshSamples | None:
        """A mesh store (``atoken data import meshes``: a folder with ``mesh_store.json``) as
        its complete assets, for ``atoken encode``; None for any other path."""
        from atoken.modalities.mesh.data import MeshSamples, is_mesh_store

        return MeshSamples(path) if is_mesh_store(path) else None

    def save_reconstruction(self, path: str, sample: Any, recon: Any, out: Any) -> tuple[str, str]:
        """``atoken reconstruct`` on a mesh file or a folder of official views:
        ``<stem>_gaussians.ply`` (3DGS PLY, in the mesh's own units; a folder's views are in
        their world's) and ``<stem>_side_by_side.png`` (a row per view for the first four:
        the view | the Gaussians rendered by the ``cpu`` renderer); returns
        ``("N voxels", "PSNR x dB")`` over every view (:meth:`cameras`, or the folder's)."""
        from pathlib import Path

        from PIL import Image

        from atoken.modalities.mesh.gaussians import GaussianSet
        from atoken.modalities.mesh.render_cpu import CpuRenderer

        if not isinstance(recon, GaussianSet):
            raise ModalityInputError(
                f"mesh: {path}: the tokenizer's mesh head decoded {type(recon).__name__}, and "
                "reconstruct writes Gaussians: decode with a Gaussian head (a tokenizer "
                "converted from the official weights needs the Gaussian decoder: atoken convert "
                "official ... --gaussian-decoder 3d_decode_gs.pt)"
            )
        stem = Path(path).stem
        official = official_folder_views(sample)
        if is_official_views(official):
            views = official.to_views()
        else:
            views, mesh = self.render(sample)
            recon = recon.transformed(mesh.center, mesh.scale)
        recon.save_ply(Path(out) / f"{stem}_gaussians.ply")
        with torch.no_grad():
            rgb = CpuRenderer()(recon, views.camera).rgb.clamp(0, 1)  # [V, 3, H, W]
        gap = torch.ones(3, rgb.shape[2], 4)  # white, between view and render
        rows = [torch.cat([v, gap, r], dim=2) for v, r in zip(views.rgb[:4], rgb[:4], strict=True)]
        grid = torch.cat(rows, dim=1)  # [3, 4 H, 2 W + 4]: view | render, one row per view
        pixels = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(Path(out) / f"{stem}_side_by_side.png")
        mse = float(((rgb - views.rgb) ** 2).mean())
        voxels = len(self.voxels(official if is_official_views(official) else views)[0])
        return f"{voxels} voxels", f"PSNR {-10 * math.log10(max(mse, 1e-12)):.2f} dB"
