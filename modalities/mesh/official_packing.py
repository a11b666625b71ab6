"""The official multi-view packing: views in the official layout -> surface voxels with RGB patch
features, the input of the official encoder's 3D path.

The rule of ``atoken_inference/scripts/pack_multiview_feat.py`` (apple/ml-atoken 3f5afdc),
reproduced step for step, in float32 like the original (written anew here; ``tests/official/
test_multiview.py`` compares it with loops and, where the official script imports, with it):

1. **Features.** Every image is resized to 256 x 256 (Lanczos), its alpha dropped, and cut into
   a 16 x 16 grid of 16 x 16 RGB patches: ``[V, 16, 16, 768]``, each patch flattened
   ``(row, column, channel)`` (einops ``(p1 p2 C)``), values in [0, 1].
2. **Surface points.** Every pixel ``(row i, column j)`` of a depth map ``Hd x Wd`` whose depth
   ``d`` is not negative is lifted to the camera point ``K^-1 (u d, v d, d)`` with
   ``(u, v) = (j / Wd, i / Hd)`` (the pixel's top-left corner, not its centre: half a depth
   pixel off a Blender render's ray) and moved to the world by ``inverse(w2c)``. More than
   ``max_points`` (500 000) points are subsampled at random, as the official script does.
3. **Occupancy.** The grid has R^3 voxels over ``[-b, b]^3`` (R = 64, b = 0.5); a voxel is
   active when a surface point lies within half a voxel of its centre on every axis,
   boundaries included (a point on a face activates both voxels; points outside the grid
   activate none). ``coords`` are the active voxels' ``(x, y, z)`` indices in raster order
   (``torch.argwhere``: x slowest), x, y, z along the world axes.
4. **Aggregation.** Each active voxel's centre is projected into every view; the view with the
   smallest camera depth is chosen (no occlusion test, no check that the centre lies inside
   that image, no averaging) and the patch of the 16 x 16 grid at
   ``round((2 uv - 1 + 1) * 15 / 2)`` (``grid_sample``, nearest, ``align_corners=True``;
   rounding half to even) is the voxel's feature; zero if that cell is off the grid.

The official encoder reads the features stored as float16, times 2 minus 1, zero-padded to
3072 channels (the first 768 = temporal slot 0 of a 4 x 16 x 16 x 3 patch), at coordinates
``(sample, t = 1, x, y, z)`` (``atoken_wrapper.inference_3d``): :meth:`OfficialVoxels.
encoder_input`. :meth:`OfficialVoxels.to_voxels` gives the mesh family's ``Voxels`` (patches
``[M, 16, 16, 3]``), which the mesh modality encodes like its own.

Shapes (V views, P surface points, M active voxels, S = 16 patch cells per side, p = 16):
    points  float32 [P, 3]       coords  int32 [M, 3]       feats  float32 [M, p * p * 3]
"""

from __future__ import annotations

import itertools

import attrs
import torch

from atoken.core.errors import ConfigError
from atoken.modalities.mesh.official_layout import OfficialViews
from atoken.modalities.mesh.voxelize import Voxels

__all__ = [
    "MAX_SURFACE_POINTS",
    "OfficialVoxels",
    "occupied_voxels",
    "surface_points",
    "voxel_centers",
    "voxel_features",
]

#: The official script's cap on surface points (a random subset beyond it).
MAX_SURFACE_POINTS = 500_000


@attrs.frozen(kw_only=True, eq=False)
class OfficialVoxels:
    """Active voxels and their features, as the official packing script writes them
    (``object.coords.npy``, ``object.feats.npy``)."""

    coords: torch.Tensor
    feats: torch.Tensor
    resolution: int
    patch_size: int = 16

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def encoder_input(
        self, *, in_channels: int = 3072, sample: int = 0, stored_fp16: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the official encoder receives (``inference_3d``): values ``[M, in_channels]``
        float32 = feats (through float16, as the script stores them, unless ``stored_fp16`` is
        False) x 2 - 1, zero-padded; coords int32 ``[M, 5]`` = ``(sample, 1, x, y, z)`` (the
        encoder's temporal tiling makes t = 0).

        Raises:
            ConfigError: ``in_channels`` smaller than the features.
        """
        m, c = self.feats.shape
        if in_channels < c:
            raise ConfigError(f"encoder_input: in_channels {in_channels} < the {c} features")
        feats = self.feats.half().float() if stored_fp16 else self.feats
        values = torch.zeros(m, in_channels)  # [M, in_channels]
        values[:, :c] = feats * 2 - 1
        coords = torch.empty(m, 5, dtype=torch.int32)  # [M, 5] (sample, t, x, y, z)
        coords[:, 0], coords[:, 1] = sample, 1
        coords[:, 2:] = self.coords
        return values, coords

    def to_voxels(self) -> Voxels:
        """The mesh family's ``Voxels`` of these features: patches ``[M, p, p, 3]``."""
        p = self.patch_size
        patches = self.feats.reshape(len(self), p, p, 3)  # [M, p, p, 3] from (p1 p2 C)
        return Voxels.create(self.coords, patches, self.resolution)


def _check(resolution: int, bounding_radius: float, image_size: int, patch_size: int) -> None:
    for name, value in (("resolution", resolution), ("image_size", image_size),
                        ("patch_size", patch_size)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"voxel_features: {name} must be an int >= 1, got {value!r}")
    if image_size % patch_size:
        raise ConfigError(
            f"voxel_features: image_size {image_size} is not a multiple of patch {patch_size}"
        )
    if not float(bounding_radius) > 0:
        raise ConfigError(f"voxel_features: bounding_radius must be > 0, got {bounding_radius}")


def surface_points(
    views: OfficialViews,
    *,
    max_points: int | None = MAX_SURFACE_POINTS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """World points ``[P, 3]`` of every depth pixel that is not negative (step 2 of the module
    docstring), in view then raster order; a random ``max_points`` of them (``generator``)
    when there are more (None: all)."""
    depth = views.depth.float()  # [V, H, W]
    v, h, w = depth.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # [H, W]
    uv1 = torch.stack([cols / w, rows / h, torch.ones(h, w)], dim=-1)  # [H, W, 3] corners
    lifted = uv1.reshape(1, h * w, 3) * depth.reshape(v, h * w, 1)  # [V, HW, 3] (u d, v d, d)
    cam = torch.bmm(torch.inverse(views.intrinsics()), lifted.transpose(1, 2))  # [V, 3, HW]
    cam = torch.cat([cam, torch.ones(v, 1, h * w)], dim=1)  # [V, 4, HW]
    world = torch.bmm(torch.inverse(views.w2c()), cam)[:, :3]  # [V, 3, HW]
    world = world.transpose(1, 2).reshape(v, h, w, 3)  # [V, H, W, 3]
    points = world[~(depth < 0)]  # [P, 3]
    if max_points is not None and points.shape[0] > max_points:
        points = points[torch.randperm(points.shape[0], generator=generator)[:max_points]]
    return points


def voxel_centers(resolution: int, bounding_radius: float = 0.5) -> tuple[torch.Tensor, float]:
    """The voxel centres along one axis ``[R]`` (float32, computed as the official grid is) and
    half a voxel's side (float32 value)."""
    step = 2 * bounding_radius / resolution
    low = torch.linspace(-bounding_radius, bounding_radius - step, resolution)  # [R] corners
    high = low + step
    return (low + high) / 2, float((high[0] - low[0]) / 2)


def occupied_voxels(
    points: torch.Tensor, resolution: int, bounding_radius: float = 0.5
) -> torch.Tensor:
    """Indices ``[M, 3]`` (int32, raster order) of the voxels within half a voxel of a point on
    every axis, boundaries included (step 3). Per axis a point is within reach of at most two
    centres, next to ``floor``: those three candidates are tested exactly."""
    r = resolution
    centers, half = voxel_centers(r, bounding_radius)
    step = 2 * bounding_radius / r
    base = torch.floor((points + bounding_radius) / step).long().clamp(-2, r + 1)  # [P, 3]
    cand = base[:, :, None] + torch.arange(-1, 2)  # [P, 3, 3]: axis, offset
    inside = (cand >= 0) & (cand < r)
    near = (centers[cand.clamp(0, r - 1)] - points[:, :, None]).abs() <= half  # [P, 3, 3]
    ok = inside & near
    occupied = torch.zeros(r**3, dtype=torch.bool)
    for a, b, c in itertools.product(range(3), repeat=3):
        hit = ok[:, 0, a] & ok[:, 1, b] & ok[:, 2, c]  # [P]
        flat = (cand[hit, 0, a] * r + cand[hit, 1, b]) * r + cand[hit, 2, c]
        occupied[flat] = True
    return torch.argwhere(occupied.reshape(r, r, r)).to(torch.int32)  # [M, 3]


def _patch_grid(views: OfficialViews, image_size: int, patch_size: int) -> torch.Tensor:
    """The feature maps ``[V, S, S, p * p * 3]`` (step 1)."""
    images = views.feature_images(image_size)  # [V, 3, I, I]
    v, p, s = views.count, patch_size, image_size // patch_size
    cells = images.reshape(v, 3, s, p, s, p)  # [V, C, h, p1, w, p2]
    return cells.permute(0, 2, 4, 3, 5, 1).reshape(v, s, s, p * p * 3)  # [V, h, w, (p1 p2 C)]


def voxel_features(
    views: OfficialViews,
    *,
    resolution: int = 64,
    bounding_radius: float = 0.5,
    image_size: int = 256,
    patch_size: int = 16,
    max_points: int | None = MAX_SURFACE_POINTS,
    generator: torch.Generator | None = None,
) -> OfficialVoxels:
    """The official packing of ``views`` (see the module docstring): the active voxels of an
    R^3 grid and each one's RGB patch from its nearest view.

    ``max_points`` and ``generator``: as :func:`surface_points` (the official script draws
    from torch's global generator; with fewer points than ``max_points`` the result is
    deterministic).

    Raises:
        ConfigError: a size that is not a positive int, ``image_size`` not a multiple of
            ``patch_size``, or ``bounding_radius <= 0``.
    """
    _check(resolution, bounding_radius, image_size, patch_size)
    points = surface_points(views, max_points=max_points, generator=generator)
    coords = occupied_voxels(points, resolution, bounding_radius)  # [M, 3]
    centers_1d, _ = voxel_centers(resolution, bounding_radius)
    centers = centers_1d[coords.long()]  # [M, 3]
    v, m = views.count, coords.shape[0]
    world = torch.cat([centers, torch.ones(m, 1)], dim=1)  # [M, 4]
    cam = torch.bmm(views.w2c(), world.T.expand(v, 4, m))[:, :3]  # [V, 3, M]
    proj = torch.bmm(views.intrinsics(), cam).transpose(1, 2)  # [V, M, 3]
    uv = proj[..., :2] / proj[..., 2:3]  # [V, M, 2] normalised image coordinates
    nearest = proj[..., 2].argmin(dim=0)  # [M] the view with the smallest camera depth
    s = image_size // patch_size
    cell = torch.round(((uv * 2 - 1) + 1) * ((s - 1) / 2)).long()  # [V, M, 2] (column, row)
    cell = cell[nearest, torch.arange(m)]  # [M, 2]
    on_grid = ((cell >= 0) & (cell < s)).all(dim=1)  # [M]
    grid = _patch_grid(views, image_size, patch_size)  # [V, S, S, C]
    col, row = cell[:, 0].clamp(0, s - 1), cell[:, 1].clamp(0, s - 1)
    feats = grid[nearest, row, col] * on_grid[:, None]  # [M, C]
    return OfficialVoxels(coords=coords, feats=feats, resolution=resolution, patch_size=patch_size)
