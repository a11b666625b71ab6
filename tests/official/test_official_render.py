"""Renders at the official renderer's settings (512 px, near 0.8, far 1.6, black background,
mip-splatting's 2D filter of 0.1): atoken's ``cpu`` renderer (:func:`official_render`) against
an independent float64 reference of the official rasterizer's image formation, written here
from the 3DGS / mip-splatting kernels' rules, on tiny scenes; and against the official
rasterizer itself wherever it runs (CUDA and mip-splatting's ``diff_gaussian_rasterization``;
skipped otherwise). ``pytest -s`` prints the PSNRs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atoken.modalities.mesh import CpuRenderer, GaussianSet
from atoken.official import load_gaussian_decoder
from atoken.official.gaussian_render import (
    OFFICIAL_KERNEL_SIZE,
    OFFICIAL_RENDER_SIZE,
    mip_filter_scale,
    official_cameras,
    official_rasterizer_render,
    official_render,
    official_renderer_missing,
    psnr,
)
from atoken.testing.official import official_gaussian_decoder_state_dict

SH_C0 = 0.28209479177387814
TILE = 16  # the CUDA rasterizer's block


def _rotation(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (w, x, y, z) ``[G, 4]`` -> rotation matrices ``[G, 3, 3]``."""
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def reference_render(g: GaussianSet, camera, view: int, kernel: float = 0.1) -> np.ndarray:
    """The official rasterizer's image ``[3, H, W]`` in float64, Gaussian by Gaussian: cull
    z <= 0.2; EWA projection with the Jacobian's x/z, y/z clamped at 1.3 tan(fov / 2); the
    2D filter (S + k I, opacity x sqrt(det S / det(S + k I))); a 3-sigma radius rounded out
    to 16 px tiles; front to back, alpha = min(0.99, o exp(power)) skipped below 1/255 or for
    power > 0, a pixel stops before the transmittance would fall below 1e-4; colours
    max(0, 0.5 + C0 sh0); black background."""
    h, w = int(camera.height[view]), int(camera.width[view])
    w2c = camera.extrinsics[view].double().numpy()
    fx, fy = float(camera.fx[view]), float(camera.fy[view])
    cx, cy = float(camera.cx[view]), float(camera.cy[view])
    tan_x, tan_y = w / (2 * fx), h / (2 * fy)
    means = g.means.double().numpy()
    cam = means @ w2c[:3, :3].T + w2c[:3, 3]  # [G, 3]
    rot = _rotation(g.quats.double().numpy())
    m = rot * g.scales.double().numpy()[:, None, :]
    sigma = m @ m.transpose(0, 2, 1)  # [G, 3, 3]
    colors = np.maximum(0.0, g.sh0.double().numpy() * SH_C0 + 0.5)
    opacity = g.opacities.double().numpy()
    image = np.zeros((h, w, 3))
    trans = np.ones((h, w))
    active = np.ones((h, w), dtype=bool)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    tiles_x, tiles_y = -(-w // TILE), -(-h // TILE)
    for i in np.argsort(cam[:, 2], kind="stable"):
        x, y, z = cam[i]
        if z <= 0.2:
            continue
        txc = min(1.3 * tan_x, max(-1.3 * tan_x, x / z)) * z
        tyc = min(1.3 * tan_y, max(-1.3 * tan_y, y / z)) * z
        jac = np.array([[fx / z, 0, -fx * txc / z**2], [0, fy / z, -fy * tyc / z**2]])
        t = jac @ w2c[:3, :3]
        cov = t @ sigma[i] @ t.T
        det0 = max(1e-6, cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2)
        cov = cov + kernel * np.eye(2)
        det1 = max(1e-6, cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2)
        coef = 0.0 if det0 <= 1e-6 or det1 <= 1e-6 else math.sqrt(det0 / (det1 + 1e-6) + 1e-6)
        det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
        if det == 0:
            continue
        ca, cb, cc = cov[1, 1] / det, -cov[0, 1] / det, cov[0, 0] / det
        mid = 0.5 * (cov[0, 0] + cov[1, 1])
        root = math.sqrt(max(0.1, mid * mid - det))
        radius = math.ceil(3 * math.sqrt(max(mid + root, mid - root)))
        u, v = fx * x / z + cx, fy * y / z + cy
        x0 = min(tiles_x, max(0, int((u - radius) / TILE)))
        x1 = min(tiles_x, max(0, int((u + radius + TILE - 1) / TILE)))
        y0 = min(tiles_y, max(0, int((v - radius) / TILE)))
        y1 = min(tiles_y, max(0, int((v + radius + TILE - 1) / TILE)))
        if (x1 - x0) * (y1 - y0) == 0:
            continue
        rows = slice(y0 * TILE, min(h, y1 * TILE))
        cols = slice(x0 * TILE, min(w, x1 * TILE))
        dx, dy = u - xs[rows, cols], v - ys[rows, cols]
        power = -0.5 * (ca * dx * dx + cc * dy * dy) - cb * dx * dy
        alpha = np.minimum(0.99, opacity[i] * coef * np.exp(power))
        hit = active[rows, cols] & (power <= 0) & (alpha >= 1 / 255)
        t_old = trans[rows, cols]
        t_new = t_old * (1 - alpha)
        stop = hit & (t_new < 1e-4)
        add = hit & ~stop
        image[rows, cols] += np.where(add, alpha * t_old, 0)[..., None] * colors[i]
        trans[rows, cols] = np.where(add, t_new, t_old)
        active[rows, cols] &= ~stop
    return image.transpose(2, 0, 1)  # [3, H, W]


# ------------------------------------------------------------------ scenes
def decoder_scene() -> GaussianSet:
    """The official decoder's Gaussians (random weights at width 64, the released 32 per
    voxel and activations) for 12 voxels near the centre of the 64^3 grid."""
    dec = load_gaussian_decoder(
        official_gaussian_decoder_state_dict(width=64, depth=2, mlp=96, seed=7), {"num_heads": 2}
    )
    g = torch.Generator().manual_seed(8)
    coords = torch.zeros(12, 4, dtype=torch.int32)
    coords[:, 1:] = torch.randint(26, 38, (12, 3), generator=g)
    with torch.no_grad():
        return dec.decode(torch.rand(12, 768, generator=g) * 2 - 1, coords)[0]


def blob_scene() -> GaussianSet:
    """60 larger overlapping Gaussians (0.005-0.05 scales, any rotation, opacities 0.2-0.95;
    some colour channels below 0, which the official renderer clamps per Gaussian)."""
    g = torch.Generator().manual_seed(9)
    n = 60
    return GaussianSet(
        means=(torch.rand(n, 3, generator=g) - 0.5) * 0.6,
        scales=torch.exp(torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.05), generator=g)),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        opacities=torch.empty(n).uniform_(0.2, 0.95, generator=g),
        sh0=torch.randn(n, 3, generator=g) * 1.5,
    )


SCENES = {"decoder": decoder_scene, "blobs": blob_scene}


@pytest.fixture(scope="module")
def cameras():
    return official_cameras(2)


@pytest.fixture(scope="module", params=sorted(SCENES))
def scene(request, cameras):
    gaussians = SCENES[request.param]()
    reference = torch.from_numpy(
        np.stack([reference_render(gaussians, cameras, v) for v in range(cameras.batch_size)])
    )
    return request.param, gaussians, reference


def test_the_official_settings_render_matches_the_reference_above_40_db(scene, cameras):
    name, gaussians, reference = scene
    assert reference.shape == (2, 3, OFFICIAL_RENDER_SIZE, OFFICIAL_RENDER_SIZE)
    assert float(reference.amax()) > 0.2  # the scene is in view
    with torch.no_grad():
        ours = official_render(gaussians, cameras).rgb
        plain = CpuRenderer()(gaussians, cameras).rgb  # 3DGS' 0.3 blur, no opacity factor
    got, before = psnr(ours, reference), psnr(plain, reference)
    diff = ours.clamp(0, 1).double() - reference.clamp(0, 1)
    covered = (ours.amax(1, keepdim=True) > 0) | (reference.amax(1, keepdim=True) > 0)
    covered = covered.expand_as(diff)  # [V, 3, H, W]: pixels either render draws on
    on_asset = -10 * math.log10(float(diff[covered].square().mean()))
    print(
        f"\n{name}: official_render vs reference PSNR {got:.2f} dB ({on_asset:.2f} dB over "
        f"the {float(covered.float().mean()):.1%} covered pixels, max |diff| "
        f"{float(diff.abs().max()):.2e}); the cpu renderer's defaults {before:.2f} dB"
    )
    assert got > 75.0  # the issue asks > 40 dB; measured 90 (blobs) and 112 (decoder)
    assert on_asset > 70.0  # measured 83 and 95
    assert got > before + 25  # the settings are what makes it match (defaults: 50 and 58)


def test_the_mip_filter_scale_is_the_determinant_ratio(cameras):
    g = GaussianSet(
        means=torch.zeros(2, 3),
        scales=torch.tensor([[0.01, 0.01, 0.01], [1e-6, 1e-6, 1e-6]]),
        quats=torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]),
        opacities=torch.ones(2),
        sh0=torch.zeros(2, 3),
    )
    focal = float(cameras.fx[0])
    var = (0.01 * focal / 2.0) ** 2  # pixels^2 of the first, at distance 2
    want = math.sqrt(var * var / ((var + 0.1) ** 2 + 1e-6) + 1e-6)
    scale = mip_filter_scale(g, cameras, 0, OFFICIAL_KERNEL_SIZE)
    assert float(scale[0]) == pytest.approx(want, rel=1e-4)
    assert float(scale[1]) == 0.0  # a degenerate projected covariance: the kernels drop it


@pytest.mark.skipif(
    official_renderer_missing() is not None, reason=str(official_renderer_missing())
)
def test_against_the_official_rasterizer(scene, cameras):  # pragma: no cover - CUDA only
    name, gaussians, _ = scene
    theirs = official_rasterizer_render(gaussians, cameras).rgb
    ours = official_render(gaussians, cameras).rgb
    got = psnr(ours, theirs)
    print(f"\n{name}: official_render vs the official rasterizer PSNR {got:.2f} dB")
    assert got > 40.0
