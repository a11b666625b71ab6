"""Gaussians: the official activations, the 3DGS PLY layout, the reference renderer's known
answers, and the compiled CPU renderer against it (gradcheck in float64)."""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch
from hypothesis import given, settings

import atoken
from atoken.modalities.mesh import CpuRenderer, GaussianSet, TorchRenderer
from atoken.modalities.mesh.cameras import look_at, pinhole, sphere_cameras
from atoken.modalities.mesh.gaussians import activate, hammersley, offset_perturbation
from atoken.testing.strategies import gaussian_sets


def test_hammersley_points_and_the_zero_raw_gaussians():
    h = hammersley(4)
    assert torch.allclose(h, torch.tensor([[0, 0, 0], [0.25, 0.5, 1 / 3], [0.5, 0.25, 2 / 3],
                                           [0.75, 0.75, 1 / 9]]))  # fmt: skip
    coords = torch.tensor([[0, 0, 0], [10, 20, 63]])
    g = activate(torch.zeros(2, 14 * 4), coords, 64, offset_perturbation(4))
    assert len(g) == 8
    centers = ((coords.float() + 0.5) / 64 - 0.5).repeat_interleave(4, 0)
    expected = centers + (h.repeat(2, 1) * 2 - 1) * 0.5 / 64  # spread over the voxel
    assert torch.allclose(g.means, expected, atol=1e-6)
    assert torch.allclose(g.scales, torch.tensor(math.sqrt(0.004**2 + 9e-4**2)))
    assert torch.allclose(g.opacities, torch.tensor(0.1))
    assert torch.equal(g.quats, torch.tensor([1.0, 0, 0, 0]).expand(8, 4))
    assert torch.allclose(g.colors, torch.tensor(0.5))


def test_ply_has_the_3dgs_layout(tmp_path):
    from plyfile import PlyData

    g = GaussianSet(
        means=torch.randn(5, 3),
        scales=torch.rand(5, 3) + 0.01,
        quats=torch.nn.functional.normalize(torch.randn(5, 4), dim=1),
        opacities=torch.rand(5) * 0.9 + 0.05,
        sh0=torch.randn(5, 3),
    )
    g.save_ply(tmp_path / "g.ply")
    vertex = PlyData.read(tmp_path / "g.ply")["vertex"]
    names = [p.name for p in vertex.properties]
    layout = "x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1"
    assert names == [*layout.split(), "rot_2", "rot_3"]
    assert torch.allclose(torch.tensor(vertex["scale_0"]), g.scales[:, 0].log())
    back = GaussianSet.load_ply(tmp_path / "g.ply")
    assert torch.allclose(back.as_tensor(), g.as_tensor(), atol=1e-5)
    (tmp_path / "x.ply").write_text("not a ply")
    with pytest.raises(atoken.ModalityInputError):
        GaussianSet.load_ply(tmp_path / "x.ply")


def _one(opacity: float, color: float, dtype=torch.float64) -> GaussianSet:
    return GaussianSet(
        means=torch.zeros(1, 3, dtype=dtype),
        scales=torch.full((1, 3), 0.02, dtype=dtype),
        quats=torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
        opacities=torch.tensor([opacity], dtype=dtype),
        sh0=torch.full((1, 3), (color - 0.5) / 0.28209479177387814, dtype=dtype),
    )


@pytest.mark.parametrize("renderer", [TorchRenderer, CpuRenderer])
def test_one_gaussian_known_answer(renderer):
    cam = pinhole(look_at(torch.tensor([[0.0, -2.0, 0.0]])), 9, 40.0)  # cx = cy = 4
    out = renderer(background=0.25)(_one(0.6, 0.8), cam)
    assert out.rgb[0, :, 4, 4].tolist() == pytest.approx([0.6 * 0.8 + 0.4 * 0.25] * 3)
    assert float(out.alpha[0, 4, 4]) == pytest.approx(0.6)
    assert float(out.alpha[0, 0, 0]) == 0.0  # beyond the 1/255 reach
    assert torch.allclose(out.rgb[0], out.rgb[0].flip(1).flip(2))  # symmetric about the centre


@settings(max_examples=10, deadline=None)
@given(scene=gaussian_sets(max_gaussians=12))
def test_tiles_change_nothing(scene):
    cam = sphere_cameras(1, 20)
    a = TorchRenderer(tile=3)(scene, cam)
    b = TorchRenderer(tile=64)(scene, cam)
    assert torch.allclose(a.rgb, b.rgb, atol=1e-12) and torch.allclose(a.alpha, b.alpha)


@pytest.mark.parametrize("renderer", [TorchRenderer, CpuRenderer])
def test_gradcheck_in_float64(renderer):
    torch.manual_seed(3)
    n = 3
    cam = sphere_cameras(1, 10)
    params = (
        (torch.rand(n, 3, dtype=torch.float64) - 0.5) * 0.3,
        torch.rand(n, 3, dtype=torch.float64) * 0.05 + 0.05,
        torch.nn.functional.normalize(torch.randn(n, 4, dtype=torch.float64), dim=1),
        torch.rand(n, dtype=torch.float64) * 0.5 + 0.3,
        torch.randn(n, 3, dtype=torch.float64),
    )
    render = renderer(background=0.3)

    def fn(means, scales, quats, opacities, sh0):
        out = render(GaussianSet(means=means, scales=scales, quats=quats,
                                 opacities=opacities, sh0=sh0), cam)  # fmt: skip
        return out.rgb, out.alpha

    inputs = tuple(p.clone().requires_grad_() for p in params)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_the_cpu_renderer_stops_compositing_like_the_reference():
    # 40 opaque Gaussians stacked along the view axis: the 1e-4 stop is reached
    n = 40
    g = GaussianSet(
        means=torch.stack([torch.zeros(n), torch.linspace(-0.3, 0.3, n), torch.zeros(n)], 1),
        scales=torch.full((n, 3), 0.05),
        quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
        opacities=torch.full((n,), 0.95),
        sh0=torch.randn(n, 3),
    ).detach()
    g = GaussianSet(**{k: getattr(g, k).double() for k in ("means", "scales", "quats",
                                                           "opacities", "sh0")})  # fmt: skip
    cam = pinhole(look_at(torch.tensor([[0.0, -2.0, 0.0]])), 16, 40.0)
    a, b = TorchRenderer()(g, cam), CpuRenderer()(g, cam)
    assert float(a.alpha.max()) > 1 - 1e-3
    assert torch.allclose(a.rgb, b.rgb, atol=1e-12) and torch.allclose(a.alpha, b.alpha)


@pytest.mark.parametrize("name", ["torch", "cpu"])
def test_renderer_settings_and_cameras_are_checked(name):
    registry = atoken.get_registry().renderers
    for bad in ({"tile": 0}, {"blur": -1.0}, {"blur": float("nan")}):
        with pytest.raises(atoken.ModalityInputError):
            registry.create(name, **bad)
    with pytest.raises(atoken.ModalityInputError, match="PinholeCamera"):
        registry.create(name)(_one(0.5, 0.5), "not a camera")


def test_the_strategys_box_projects_inside_every_sphere_camera():
    """``gaussian_sets``' promise (#33): the corners of its default box of means land inside the
    image of every ``sphere_cameras`` view (at the old extent 0.4 some did not)."""
    extent = inspect.signature(gaussian_sets).parameters["extent"].default
    corners = torch.tensor(list(itertools.product([-extent, extent], repeat=3)))  # [8, 3]
    cam = sphere_cameras(64, 32)
    homo = torch.cat([corners, torch.ones(8, 1)], 1)  # [8, 4]
    pts = torch.einsum("vij,nj->vni", cam.extrinsics, homo)[..., :3]  # [V, 8, 3] camera frame
    assert bool((pts[..., 2] > 0).all())  # in front of every camera
    pix = torch.einsum("vij,vnj->vni", cam.intrinsics[:, :3, :3], pts)  # [V, 8, 3]
    uv = pix[..., :2] / pix[..., 2:]  # [V, 8, 2]
    assert bool(((uv >= -0.5) & (uv <= 32 - 0.5)).all()), float(uv.abs().max())
    wider = corners / extent * 0.4  # the old default: outside for some view
    pts = torch.einsum("vij,nj->vni", cam.extrinsics, torch.cat([wider, torch.ones(8, 1)], 1))
    pix = torch.einsum("vij,vnj->vni", cam.intrinsics[:, :3, :3], pts[..., :3])
    uv = pix[..., :2] / pix[..., 2:]
    assert not bool(((uv >= -0.5) & (uv <= 32 - 0.5)).all())
