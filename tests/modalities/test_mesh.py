"""The mesh modality: loading, cameras, the two mesh renderers, voxelisation, typed errors, and a
mesh file through the public Tokenizer to Gaussians and a render."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import trimesh

import atoken
from atoken.modalities.mesh import (
    GaussianSet,
    MeshModality,
    Views,
    Voxels,
    load_mesh,
    render_views,
    sphere_cameras,
    voxelize,
)
from atoken.modalities.mesh.cameras import camera_centers, look_at, pinhole
from atoken.modalities.mesh.views import has_embree

pybullet_data = pytest.importorskip("pybullet_data")
DATA = pybullet_data.getDataPath()
DUCK = os.path.join(DATA, "duck.obj")


def _box(colors: bool = True) -> trimesh.Trimesh:
    box = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    if colors:
        palette = np.array(
            [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]]
        )
        normals = np.asarray(box.face_normals)
        axis = np.abs(normals).argmax(1) * 2 + (normals.max(1) > 0.5)  # one colour per side
        box.visual = trimesh.visual.ColorVisuals(box, face_colors=palette[axis])
    return box


def test_cameras_look_at_the_origin_from_the_radius():
    cam = sphere_cameras(16, 64, radius=2.0)
    assert torch.allclose(camera_centers(cam).norm(dim=1), torch.full((16,), 2.0), atol=1e-5)
    origin = torch.zeros(16, 1, 3)
    uv = cam.project(origin)[:, 0]  # [V, 2]
    assert torch.allclose(uv, torch.full_like(uv, 31.5), atol=1e-4)


def test_load_mesh_normalises_every_format(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=3.0)
    sphere.apply_translation([10.0, -2.0, 5.0])
    for ext in ("obj", "ply", "glb"):
        path = tmp_path / f"s.{ext}"
        sphere.export(path)
        norm = load_mesh(path)
        v = np.asarray(norm.mesh.vertices)
        assert v.min() >= -0.5 and v.max() <= 0.5
        assert math.isclose(float((v.max(0) - v.min(0)).max()), 1.0, abs_tol=1e-3)
        assert np.allclose(norm.center, [10.0, -2.0, 5.0], atol=1e-3)


@pytest.mark.skipif(not has_embree(), reason="embreex is not installed")
@pytest.mark.parametrize("source", ["duck", "box"])
def test_embree_and_the_torch_zbuffer_agree(source):
    mesh = load_mesh(DUCK if source == "duck" else _box()).mesh
    cam = sphere_cameras(4, 64)
    a = render_views(mesh, cam, renderer="embree")
    b = render_views(mesh, cam, renderer="torch")
    ma, mb = a.depth > 0, b.depth > 0
    assert (ma & mb).sum() / (ma | mb).sum() > 0.995
    both = ma & mb
    assert float((a.depth - b.depth)[both].abs().max()) < 1e-3
    same = (a.rgb - b.rgb).abs().amax(1)[both] < 1e-6
    assert float(same.float().mean()) > 0.99


def test_colour_rules_face_vertex_texture_and_material():
    cam = sphere_cameras(6, 48)
    faces = render_views(load_mesh(_box()).mesh, cam, renderer="torch")
    seen = faces.rgb.permute(0, 2, 3, 1)[faces.depth > 0]  # [P, 3]
    assert set(map(tuple, (seen * 255).round().int().tolist())) <= {
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)
    }  # fmt: skip
    grey = render_views(load_mesh(_box(colors=False)).mesh, cam, renderer="torch")
    assert torch.allclose(grey.rgb.permute(0, 2, 3, 1)[grey.depth > 0], torch.tensor(102 / 255))
    duck = render_views(load_mesh(DUCK).mesh, cam, renderer="torch")
    mean = duck.rgb.permute(0, 2, 3, 1)[duck.depth > 0].mean(0)
    assert mean[0] > 0.8 and mean[1] > 0.6 and mean[2] < 0.2  # the yellow texture


def test_voxels_of_a_box_are_its_surface_shell_with_face_colours():
    mod = MeshModality(resolution=8, views=16, render_size=64, patch_size=4, renderer="torch")
    voxels, extra = mod.voxels(_box())
    assert isinstance(voxels, Voxels) and extra["scale"] == pytest.approx(0.49995, rel=1e-4)
    c = voxels.coords
    shell = ((c == 0) | (c == 7)).any(1)
    assert bool(shell.all()) and len(voxels) == 8**3 - 6**3
    centre = voxels.patches[:, 2, 2]  # the pixel at the projection of the voxel centre
    assert bool(((centre == 0) | (centre == 1)).all()) and bool((centre.sum(1) > 0).all())


def test_each_voxel_takes_its_patch_from_the_nearest_view():
    mesh = load_mesh(trimesh.creation.icosphere(subdivisions=3)).mesh
    eyes = torch.tensor([[2.0, 0.0, 0.0], [-2.2, 0.0, 0.0]])
    cam = pinhole(look_at(eyes), 64, 40.0)
    views = render_views(mesh, cam, renderer="torch")
    rgb = torch.zeros_like(views.rgb)
    rgb[0, 0], rgb[1, 1] = 1.0, 1.0  # view 0 red, view 1 green
    painted = Views(rgb=rgb * (views.depth > 0)[:, None], depth=views.depth, camera=cam)
    voxels = voxelize(painted, resolution=16, patch_size=2)
    x = voxels.centers()[:, 0]
    colour = voxels.patches[:, 1, 1]  # [n, 3]
    # by camera depth, x > 0 is nearer the camera at +2 and x < -0.1 the one at -2.2 (black: a
    # centre that projects just outside the silhouette)
    front, back = x > 0, x < -0.15
    assert not bool(colour[front, 1].any()) and not bool(colour[back, 0].any())
    assert float(colour[front, 0].mean()) > 0.7 and float(colour[back, 1].mean()) > 0.7


def test_typed_errors(tmp_path):
    text = tmp_path / "notes.obj"
    text.write_text("this is not a mesh\n")
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"\x00garbage")
    mod = MeshModality(resolution=16, views=2, render_size=32)
    for sample in (text, bad, tmp_path / "missing.ply", trimesh.Trimesh(), 7):
        with pytest.raises(atoken.ModalityInputError):
            mod.patchify(sample)
    far = trimesh.creation.box()
    blank = Views(rgb=torch.zeros(2, 3, 32, 32), depth=torch.zeros(2, 32, 32), camera=mod.cameras())
    with pytest.raises(atoken.ModalityInputError, match="no visible surface"):
        mod.patchify(blank)
    with pytest.raises(atoken.TooManyTokensError):
        MeshModality(resolution=16, views=2, render_size=32, max_tokens=10).patchify(far)
    with pytest.raises(atoken.ModalityInputError):
        Views(rgb=torch.zeros(2, 3, 8, 8), depth=torch.zeros(2, 8, 8), camera=sphere_cameras(3, 8))


def test_a_mesh_file_through_the_tokenizer_to_gaussians_and_a_render(tmp_path):
    tok = atoken.Tokenizer.from_preset(
        "tiny",
        modality_params={"mesh": {"resolution": 16, "views": 4, "render_size": 64}},
        head_params={"mesh": {"gaussians_per_voxel": 4}},
    ).eval()
    with torch.no_grad():
        latent = tok.encode([DUCK], "mesh")
        (gaussians,) = tok.decode(latent)
    assert latent.coords[:, 0].eq(0).all() and latent.meta[0]["resolution"] == 16
    assert isinstance(gaussians, GaussianSet) and len(gaussians) == 4 * latent.num_tokens
    # a zero-initialised head: each voxel's Gaussians sit around its centre at opacity 0.1
    centers = (latent.coords[:, 1:].float() + 0.5) / 16 - 0.5
    offset = gaussians.means.reshape(-1, 4, 3) - centers[:, None]
    assert float(offset.abs().max()) <= 0.5 / 16 + 1e-6
    assert torch.allclose(gaussians.opacities, torch.tensor(0.1))
    renderer = atoken.get_registry().renderers.create("torch")
    out = renderer(gaussians, sphere_cameras(2, 32))
    assert out.rgb.shape == (2, 3, 32, 32) and bool(torch.isfinite(out.rgb).all())
    assert float(out.alpha.max()) > 0.5  # the asset covers part of the image
    original = gaussians.transformed(latent.meta[0]["center"], latent.meta[0]["scale"])
    duck = trimesh.load(DUCK, force="mesh", process=False)
    assert np.allclose(original.means.mean(0).numpy(), duck.bounding_box.centroid, atol=0.2)
    gaussians.save_ply(tmp_path / "duck.ply")
    again = GaussianSet.load_ply(tmp_path / "duck.ply")
    assert torch.allclose(again.as_tensor(), gaussians.as_tensor(), atol=1e-6)


def test_the_pixels_head_decodes_voxels():
    tok = atoken.Tokenizer.from_preset(
        "tiny", heads={"mesh": "pixels"}, modality_params={"mesh": {"resolution": 8}}
    ).eval()
    samples = tok.modality("mesh").examples(0)
    with torch.no_grad():
        decoded = tok.decode(tok.encode(samples, "mesh"))
    for sample, out in zip(samples, decoded, strict=True):
        assert isinstance(out, Voxels) and torch.equal(out.coords, sample.coords)
        assert out.patches.shape == sample.patches.shape
