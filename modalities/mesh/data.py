"""Mesh stores (meshes rendered, voxelised and stored once) and the ``meshes`` data source.

Layout of a mesh store folder (each sub-store is a media store of :mod:`atoken.data.store`:
checksummed samples, atomic commits, resumable writers):

    mesh_store.json     {"schema": "atoken.meshes", "version": 1, "settings": {...}}
    normalization/      float32 [4]             center x, y, z and scale of the mesh
    views/              uint8  [V + E, H, W, 3] V feature views, then E evaluation views
    depth/              float32 [V + E, H, W]   camera z, 0 where no surface
    cameras/            float32 [V + E, 2, 4, 4] intrinsics, extrinsics (world -> camera)
    coords/             uint8  [n, 3]           active voxels (x, y, z), raster order
    patches/            uint8  [n, p, p, 3]     each voxel's patch from its nearest view

The V feature views (a Fibonacci sphere) give the voxels their patches and the 3D task's
training views; the E evaluation views (an orbit at 30 degrees elevation, offset from the
sphere) are never used for features or training, so held-out metrics are on unseen views.
Each sample is committed part by part in this order, ``patches`` last, so a sample is complete
when its ``patches`` row is; a resumed import re-renders the others and adds each part that
is missing.

The ``meshes`` data source (:class:`MeshSource`): a batch is ``batch_size`` records from this
process's share of the training assets, each with ``views_per_step`` of its feature views, all
drawn from (seed, rank, step, micro) alone; held-out assets (``heldout`` names, else the last
one) keep their evaluation views.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from kornia.geometry.camera import PinholeCamera

from atoken.core.errors import ConfigError, ModalityInputError, StoreError
from atoken.data.media_writer import MediaWriter
from atoken.data.sources import SourceContext, split_heldout
from atoken.data.store import MediaStore
from atoken.modalities.mesh.cameras import orbit_cameras, select_views, sphere_cameras
from atoken.modalities.mesh.meshes import load_mesh
from atoken.modalities.mesh.views import MESH_RENDERERS, Views, render_views
from atoken.modalities.mesh.voxelize import Voxels, voxelize
from atoken.plugins.hookspecs import hookimpl

__all__ = [
    "MESH_EXTENSIONS",
    "MeshImportReport",
    "MeshRecord",
    "MeshSamples",
    "MeshSettings",
    "MeshSource",
    "MeshStore",
    "import_meshes",
    "is_mesh_store",
    "list_meshes",
]

SCHEMA, VERSION, MANIFEST = "atoken.meshes", 1, "mesh_store.json"
MESH_EXTENSIONS = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")
#: (sub-store, sample axes, dtype) in the order they are written.
PARTS = (
    ("normalization", ("K",), "float32"),
    ("views", ("V", "H", "W", "C"), "uint8"),
    ("depth", ("V", "H", "W"), "float32"),
    ("cameras", ("V", "M", "R", "K"), "float32"),
    ("coords", ("N", "K"), "uint8"),
    ("patches", ("N", "H", "W", "C"), "uint8"),
)


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"meshes: {attribute.name} must be a positive int, got {value!r}")


@attrs.frozen(kw_only=True)
class MeshSettings:
    """How a store's meshes were rendered and voxelised (fixed for the store)."""

    views: int = attrs.field(default=16, validator=_positive)
    eval_views: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    render_size: int = attrs.field(default=256, validator=_positive)
    resolution: int = attrs.field(default=64, validator=[_positive, attrs.validators.le(256)])
    patch_size: int = attrs.field(default=16, validator=_positive)
    fov_degrees: float = 40.0
    radius: float = 2.0
    renderer: str = attrs.field(default="auto", validator=attrs.validators.in_(MESH_RENDERERS))

    def cameras(self) -> PinholeCamera:
        """The V feature cameras, then the E evaluation cameras."""
        s, f, r = self.render_size, self.fov_degrees, self.radius
        feature = sphere_cameras(self.views, s, fov_degrees=f, radius=r)
        if not self.eval_views:
            return feature
        orbit = orbit_cameras(self.eval_views, s, elevation_degrees=30.0, fov_degrees=f, radius=r)
        return PinholeCamera(
            torch.cat([feature.intrinsics, orbit.intrinsics]),
            torch.cat([feature.extrinsics, orbit.extrinsics]),
            torch.cat([feature.height, orbit.height]),
            torch.cat([feature.width, orbit.width]),
        )


@attrs.frozen(kw_only=True)
class MeshRecord:
    """One stored asset: its voxels (the model's input) and its views."""

    name: str
    voxels: Voxels
    views: Views  # the V feature views (training targets)
    eval_views: Views | None  # the E evaluation views, never trained on
    center: tuple[float, float, float]
    scale: float

    def as_tensor(self) -> torch.Tensor:
        """The record flattened (voxels, then the views' pixels), for comparisons."""
        return torch.cat([self.voxels.as_tensor().flatten(), self.views.rgb.flatten()])


@attrs.frozen(kw_only=True)
class MeshImportReport:
    """What an import did (``bad``: meshes skipped with ``skip_bad``, and why)."""

    added: int
    already_stored: int
    committed: int
    bad: tuple[tuple[str, str], ...] = ()


def list_meshes(sources: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """``(name, path)`` of every mesh file under ``sources`` (files, folders searched
    recursively, globs), named by the path relative to the sources' common folder.

    Raises:
        ConfigError: a source that matches no mesh file, or two files with one name.
    """
    found: list[str] = []
    for src in map(os.fspath, sources):
        if os.path.isdir(src):
            hits = [
                os.path.join(root, f)
                for root, _, files in os.walk(src)
                for f in files
                if f.lower().endswith(MESH_EXTENSIONS)
            ]
        elif os.path.isfile(src):
            hits = [src]
        else:
            hits = [p for p in glob.glob(src, recursive=True) if os.path.isfile(p)]
        if not hits:
            raise ConfigError(
                f"meshes: {src!r} matches no mesh file ({', '.join(MESH_EXTENSIONS)})"
            )
        found.extend(sorted(os.path.abspath(h) for h in hits))
    found = list(dict.fromkeys(found))
    root = os.path.commonpath([os.path.dirname(p) for p in found])
    names = [os.path.relpath(p, root).replace(os.sep, "/") for p in found]
    if len(set(names)) != len(names):
        raise ConfigError("meshes: two sources have the same name")
    return list(zip(names, found, strict=True))


def _manifest(dst: str, settings: MeshSettings) -> None:
    """Create or check the store's manifest (refusing anything that is not this store)."""
    path = os.path.join(dst, MANIFEST)
    want = {"schema": SCHEMA, "version": VERSION, "settings": attrs.asdict(settings)}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            have = json.load(f)
        if have.get("schema") != SCHEMA:
            raise StoreError(f"meshes: {dst!r} is not a mesh store", store=dst)
        if have != want:
            raise StoreError(
                f"meshes: {dst!r} holds meshes made with other settings "
                f"{have.get('settings')}; import into a new folder",
                store=dst,
            )
        return
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise StoreError(
            f"meshes: {dst!r} exists and is not a mesh store; nothing was written", store=dst
        )
    os.makedirs(dst, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(want, f, indent=2)
    os.replace(tmp, path)


def _render(path: str, settings: MeshSettings) -> dict[str, np.ndarray]:
    mesh = load_mesh(path)
    cam = settings.cameras()
    views = render_views(mesh.mesh, cam, renderer=settings.renderer)
    v = settings.views
    feature = Views(rgb=views.rgb[:v], depth=views.depth[:v], camera=select_views(cam, range(v)))
    voxels = voxelize(feature, resolution=settings.resolution, patch_size=settings.patch_size)
    rgb = (views.rgb.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # [V + E, H, W, 3]
    cams = torch.stack([cam.intrinsics, cam.extrinsics], dim=1)  # [V + E, 2, 4, 4]
    return {
        "normalization": np.array([*mesh.center, mesh.scale], np.float32),
        "views": rgb.numpy(),
        "depth": views.depth.numpy().astype(np.float32),
        "cameras": cams.numpy().astype(np.float32),
        "coords": voxels.coords.numpy().astype(np.uint8),
        "patches": (voxels.patches * 255).round().to(torch.uint8).numpy(),
    }


def import_meshes(
    sources: Sequence[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    settings: MeshSettings | None = None,
    progress: bool = True,
    lock_timeout: float = 0.0,
    skip_bad: bool = False,
) -> MeshImportReport:
    """Render, voxelise and store every mesh under ``sources`` in the mesh store ``dst``
    (created, or resumed: meshes already complete are skipped). With ``skip_bad``, a file
    that is not a usable mesh is reported in the result instead of raised.

    Raises:
        ConfigError: sources that match nothing or collide. ModalityInputError: a file that is
        not a mesh, or one with no visible surface. StoreError: ``dst`` holds anything but a
        mesh store of the same settings. StoreLockedError: another writer holds ``dst``.
    """
    from tqdm.auto import tqdm

    settings = settings or MeshSettings()
    found = list_meshes(sources)
    dst = os.fspath(dst)
    _manifest(dst, settings)
    writers: dict[str, MediaWriter] = {}
    try:
        for part, axes, dtype in PARTS:
            writers[part] = MediaWriter(
                os.path.join(dst, part),
                modality="mesh",
                sample_axes=axes,
                dtype=dtype,
                flush_samples=1,
                sources=[p for _, p in found],
                lock_timeout=lock_timeout,
            )
        done = writers["patches"].names
        todo = [(n, p) for n, p in found if n not in done]
        added = 0
        bad: list[tuple[str, str]] = []
        with tqdm(total=len(todo), unit="mesh", disable=not progress) as bar:
            for name, path in todo:
                try:
                    parts = _render(path, settings)
                except ModalityInputError as exc:
                    if not skip_bad:
                        raise ModalityInputError(f"meshes: {name!r}: {exc}") from exc
                    bad.append((name, str(exc)))
                    bar.update(1)
                    continue
                for part, _, _ in PARTS:  # committed part by part, patches last
                    writers[part].add(name, parts[part])
                    writers[part].flush()
                added += 1
                bar.update(1)
        for part, _, _ in PARTS:  # the parts before patches first: a sample is complete last
            writers.pop(part).close()
    finally:
        for writer in writers.values():
            writer.close()
    committed = MediaStore(os.path.join(dst, "patches")).committed
    return MeshImportReport(added=added, already_stored=len(found) - len(todo), committed=committed)


class MeshStore:
    """Read-only view of a mesh store's complete samples (checksums verified on read).

    Raises:
        StoreError: ``path`` is not a mesh store. StoreIntegrityError: a damaged sub-store or
        a sample whose checksum fails.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        manifest = os.path.join(self.path, MANIFEST)
        if not os.path.isfile(manifest):
            what = "is not a mesh store" if os.path.exists(self.path) else "does not exist"
            raise StoreError(
                f"meshes: {self.path!r} {what} (no {MANIFEST}); write one with "
                f"`atoken data import meshes SRC... {self.path}` (docs/3d.md)",
                store=self.path,
            )
        with open(manifest, encoding="utf-8") as f:
            info = json.load(f)
        if info.get("schema") != SCHEMA or info.get("version") != VERSION:
            raise StoreError(
                f"meshes: {self.path!r} has schema {info.get('schema')!r}", store=self.path
            )
        self.settings = MeshSettings(**info["settings"])
        self._parts = {p: MediaStore(os.path.join(self.path, p)) for p, _, _ in PARTS}
        self._index = {p: {n: i for i, n in enumerate(s.names)} for p, s in self._parts.items()}
        complete = set.intersection(*(set(i) for i in self._index.values()))
        self.names: tuple[str, ...] = tuple(
            n for n in self._parts["patches"].names if n in complete
        )

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, part: str, name: str) -> np.ndarray:
        return self._parts[part].read(self._index[part][name])

    def record(self, name: str, *, views: Sequence[int] | None = None) -> MeshRecord:
        """The asset ``name``; ``views`` picks feature views (all by default)."""
        if name not in self._index["patches"]:
            raise StoreError(
                f"meshes: no complete sample {name!r} in {self.path!r}", store=self.path, name=name
            )
        s = self.settings
        coords = torch.from_numpy(self._read("coords", name).astype(np.int64))
        patches = torch.from_numpy(self._read("patches", name)).float() / 255
        voxels = Voxels.create(coords, patches, s.resolution)
        rgb = torch.from_numpy(self._read("views", name)).permute(0, 3, 1, 2).float() / 255
        depth = torch.from_numpy(self._read("depth", name))
        cams = torch.from_numpy(self._read("cameras", name))  # [V + E, 2, 4, 4]
        side = torch.full((cams.shape[0],), float(s.render_size))
        cam = PinholeCamera(cams[:, 0], cams[:, 1], side, side.clone())

        def pick(index: Sequence[int]) -> Views:
            idx = torch.as_tensor(list(index), dtype=torch.long)
            return Views(rgb=rgb[idx], depth=depth[idx], camera=select_views(cam, idx))

        feature = pick(range(s.views) if views is None else views)
        evaluation = pick(range(s.views, s.views + s.eval_views)) if s.eval_views else None
        norm = self._read("normalization", name)
        return MeshRecord(
            name=name,
            voxels=voxels,
            views=feature,
            eval_views=evaluation,
            center=(float(norm[0]), float(norm[1]), float(norm[2])),
            scale=float(norm[3]),
        )


def is_mesh_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a mesh store folder (it has a ``mesh_store.json``)."""
    return os.path.isfile(os.path.join(os.fspath(path), MANIFEST))


class MeshSamples(Sequence):
    """A mesh store's complete assets as a sequence of :class:`MeshRecord` (with all their
    views), in store order: what ``atoken encode`` reads. ``names`` and ``modality`` as
    :class:`atoken.data.ZarrSamples` has them."""

    modality = "mesh"

    def __init__(self, path: str | os.PathLike) -> None:
        self.store = MeshStore(path)
        self.names: tuple[str, ...] = self.store.names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> MeshRecord:  # type: ignore[override]
        return self.store.record(self.names[i])


# ------------------------------------------------------------------ the data source
def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


@attrs.define(kw_only=True, slots=False)
class MeshSource:
    """``meshes``: the mesh store at ``path`` (written by ``atoken data import meshes``)."""

    context: SourceContext = attrs.field(factory=SourceContext)
    path: str = ""
    batch_size: int = attrs.field(default=1, validator=_positive)
    views_per_step: int = attrs.field(default=4, validator=_positive)
    heldout_choice: tuple[str, ...] = attrs.field(default=(), converter=_names, alias="heldout")

    modality: str = attrs.field(init=False, default=MeshSamples.modality)
    heldout: list[MeshRecord] = attrs.field(init=False, factory=list)
    heldout_names: tuple[str, ...] = attrs.field(init=False, default=())

    def __attrs_post_init__(self) -> None:
        if not self.path:
            raise ConfigError("meshes needs path = the mesh store's folder")
        self.store = MeshStore(self.path)
        views = self.store.settings.views
        if self.views_per_step > views:
            raise ConfigError(f"meshes: views_per_step {self.views_per_step} > {views} views")
        train, held = split_heldout(self.store.names, self.heldout_choice, self.path)
        ctx = self.context
        self.train: Sequence[str] = [self.store.names[i] for i in train][ctx.rank :: ctx.world_size]
        if not self.train:
            raise ConfigError(f"meshes: no training asset for rank {ctx.rank} of {ctx.world_size}")
        self.heldout_names = tuple(self.store.names[i] for i in held)
        self.heldout = [self.store.record(n) for n in self.heldout_names]

    @staticmethod
    def example_data(folder: str | os.PathLike) -> dict[str, Any]:
        """The ``data`` table of a small real source for contract tests: two pybullet meshes
        (duck and teddy) imported once into ``folder`` at 48 px, 4 + 2 views, a 16^3 grid."""
        from atoken.modalities.mesh.pybullet_sets import pybullet_root

        path = os.path.join(os.fspath(folder), "example_meshes")
        root = pybullet_root()
        sources = [os.path.join(root, "duck.obj"), os.path.join(root, "teddy2_VHACD_CHs.obj")]
        settings = MeshSettings(views=4, eval_views=2, render_size=48, resolution=16)
        import_meshes(sources, path, settings=settings, progress=False)
        return {"source": "meshes", "path": path, "views_per_step": 2}

    def batch(self, step: int, micro: int = 0) -> list[MeshRecord]:
        c = self.context
        rng = np.random.default_rng([c.seed, c.rank, step, micro])
        picks = rng.choice(
            len(self.train), self.batch_size, replace=len(self.train) < self.batch_size
        )
        views = self.store.settings.views
        return [
            self.store.record(
                self.train[int(i)],
                views=sorted(rng.choice(views, self.views_per_step, replace=False).tolist()),
            )
            for i in picks
        ]


@hookimpl
def register_data_sources(register) -> None:
    register("meshes", MeshSource)
