"""Metrics (psnr, ssim, lpips, fd_effnet, rfid) and the shared Fréchet distance."""

from __future__ import annotations

import math
import warnings

import lpips
import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import atoken
from atoken.core.errors import ConfigError, ModalityInputError, WeightsNotFoundError
from atoken.plugins.metrics.frechet import (
    FeatureStatistics,
    feature_statistics,
    frechet_distance,
    frechet_from_features,
)
from atoken.testing.contracts import random_sets
from tests.losses._fakes import fake_torchvision_weights, hub_dir, single_threaded

__all__ = ["hub_dir"]

REGISTRY = atoken.get_registry()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Single-threaded compute on this shared machine (see ``single_threaded``)."""
    with single_threaded():
        yield


def _pair(seed, shape=(3, 3, 24, 20)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g), torch.rand(*shape, generator=g)


# ------------------------------------------------------------------ every metric
#: Faster settings for the 1280/2048-d Fréchet metrics (their defaults are exercised below).
FAST = {"fd_effnet": {"method": "eigh", "size": 64}, "rfid": {"method": "eigh"}}


#: Metrics of image pairs (embedding metrics have their own protocol test).
IMAGE_METRICS = [
    n
    for n in REGISTRY.metrics.names()
    if getattr(REGISTRY.metrics.get(n), "inputs", "") != "embeddings"
]


@pytest.fixture(params=IMAGE_METRICS)
def metric(request):
    try:
        return REGISTRY.metrics.create(request.param, **FAST.get(request.param, {}))
    except WeightsNotFoundError as exc:  # pretrained weights not on this machine
        pytest.skip(str(exc))


def _modality_pair(name: str, seed: int) -> tuple[list, list]:
    """(prediction, target) lists of a modality's own example samples."""
    target = REGISTRY.modalities.create(name).examples(seed)
    g = torch.Generator().manual_seed(seed)
    return [x + 0.05 * torch.randn(x.shape, generator=g) for x in target], target


def test_every_metric_follows_the_protocol(metric):
    with pytest.raises(ConfigError):
        metric.compute()  # nothing seen yet
    if "set" in getattr(metric, "accepts", ()):  # a metric of sets: sets of other sizes
        for seed in (0, 1):
            metric.update(*random_sets(seed))
        out = metric.compute()
        assert out and all(isinstance(v, float) and math.isfinite(v) for v in out.values())
        metric.reset()
        with pytest.raises(ModalityInputError):
            metric.update([torch.rand(4, 3)], [torch.rand(5, 2)])  # rows of different widths
        return
    modality = getattr(metric, "modality", "image")  # what it scores: images unless it says
    if modality != "image":  # a metric of another modality scores that modality's samples
        for seed in (0, 1):
            metric.update(*_modality_pair(modality, seed))
        out = metric.compute()
        assert out and all(isinstance(v, float) and math.isfinite(v) for v in out.values())
        metric.reset()
        with pytest.raises(ModalityInputError):
            metric.update([torch.rand(4, 4)], [torch.rand(5, 5)])  # pairs of different shapes
        return
    for seed in (0, 1):
        metric.update(*_pair(seed, (3, 3, 40, 36)))
    out = metric.compute()
    assert out and all(isinstance(k, str) and isinstance(v, float) for k, v in out.items())
    assert all(math.isfinite(v) for v in out.values())
    metric.reset()
    with pytest.raises(ConfigError):
        metric.compute()
    with pytest.raises(ModalityInputError):
        metric.update(torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8))  # not RGB


# ------------------------------------------------------------------ Fréchet distance
def _reference_fd(mu1, s1, mu2, s2):
    """A direct computation, independent of atoken: scipy's sqrtm of the product."""
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


@st.composite
def gaussians(draw, *, max_dim=6):
    d = draw(st.integers(1, max_dim))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(d, d + 2)), rng.normal(size=(d, d + 2))
    return rng.normal(size=d), a @ a.T / d, rng.normal(size=d), b @ b.T / d


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
@given(stats=gaussians())
def test_frechet_matches_direct_scipy_and_terms_add_up(method, stats):
    mu1, s1, mu2, s2 = stats
    fd = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert fd["total"] == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)
    assert fd["total"] == pytest.approx(fd["mean_term"] + fd["cov_term"], rel=1e-12, abs=1e-12)
    assert fd["mean_term"] == pytest.approx(float(((mu1 - mu2) ** 2).sum()))
    assert fd["cov_term"] >= -1e-8


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
@given(stats=gaussians())
def test_frechet_known_cases(method, stats):
    mu1, s1, mu2, _ = stats
    same = frechet_distance(mu1, s1, mu1, s1, method=method)
    assert same["total"] == pytest.approx(0.0, abs=1e-6)
    shifted = frechet_distance(mu1, s1, mu2, s1, method=method)  # mean shift only
    assert shifted["total"] == pytest.approx(float(((mu1 - mu2) ** 2).sum()), rel=1e-6, abs=1e-6)
    assert shifted["cov_term"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_of_diagonal_covariances_is_closed_form(method):
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    fd = frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b), method=method)
    assert fd["mean_term"] == pytest.approx(3.0)
    assert fd["cov_term"] == pytest.approx(float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum()))


def test_frechet_survives_singular_covariances():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 16)), rng.normal(size=(4, 16)) + 0.5  # 4 samples, 16 dims
    fd = frechet_from_features(x, y)
    assert all(math.isfinite(v) for v in fd.values()) and fd["total"] > 0
    assert fd["total"] == pytest.approx(
        frechet_from_features(x, y, method="eigh")["total"], rel=1e-4
    )
    assert frechet_from_features(x, x)["total"] == pytest.approx(0.0, abs=1e-4)
    assert frechet_from_features(x, x, method="eigh")["total"] == pytest.approx(0.0, abs=1e-6)


def test_sqrtm_and_eigh_agree_on_well_conditioned_statistics():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(400, 64)), rng.normal(size=(300, 64)) * 1.3 + 0.1
    a, b = frechet_from_features(x, y), frechet_from_features(x, y, method="eigh")
    assert a["total"] == pytest.approx(b["total"], rel=1e-8)


def test_frechet_shape_errors():
    with pytest.raises(ConfigError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ConfigError, match="at least 2"):
        feature_statistics(np.zeros((1, 4)))
    with pytest.raises(ConfigError):
        feature_statistics(np.zeros(4))
    with pytest.raises(ConfigError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


@settings(max_examples=20)
@given(sizes=st.lists(st.integers(0, 5), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_running_statistics_equal_numpy(sizes, seed):
    rng = np.random.default_rng(seed)
    chunks = [rng.normal(size=(n, 3)) * 10 + 5 for n in sizes]
    running = FeatureStatistics()
    for chunk in chunks:
        running.update(torch.from_numpy(chunk))
    data = np.concatenate(chunks)
    if len(data) < 2:
        with pytest.raises(ConfigError):
            running.compute()
        return
    mu, sigma = running.compute()
    np.testing.assert_allclose(mu, data.mean(0), atol=1e-9)
    np.testing.assert_allclose(sigma, np.cov(data, rowvar=False), atol=1e-8)
    with pytest.raises(ConfigError):
        running.update(np.zeros((2, 4)))  # another dimension


# ------------------------------------------------------------------ psnr / ssim
def test_psnr_of_a_known_mse():
    t = torch.full((2, 3, 8, 8), 0.5)
    p = t + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # MSE 1e-2 and 1e-4: 20 dB and 40 dB
    psnr = REGISTRY.metrics.create("psnr")
    psnr.update(p, t)
    assert psnr.compute()["psnr"] == pytest.approx(30.0, rel=1e-5)
    psnr.reset()
    psnr.update([p[0], torch.zeros(3, 5, 9)], [t[0], torch.full((3, 5, 9), 0.1)])
    assert psnr.compute()["psnr"] == pytest.approx(20.0, rel=1e-5)  # 20 dB for both images
    psnr.update(t, t)
    assert psnr.compute()["psnr"] == math.inf


def test_psnr_data_range():
    p, t = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 2.0)
    psnr = REGISTRY.metrics.create("psnr", data_range=255.0)
    psnr.update(p, t)
    assert psnr.compute()["psnr"] == pytest.approx(10 * math.log10(255.0**2 / 4.0))


def test_ssim_equals_kornia_per_image_and_hand_computed_constants():
    import kornia

    p, t = _pair(3, (2, 3, 32, 24))
    ssim = REGISTRY.metrics.create("ssim")
    ssim.update(p, t)
    expected = [float(kornia.metrics.ssim(p[i : i + 1], t[i : i + 1], 11).mean()) for i in range(2)]
    assert ssim.compute()["ssim"] == pytest.approx(sum(expected) / 2, rel=1e-6)
    ssim.reset()
    a, b = 0.3, 0.6  # constant images: SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01)²
    ssim.update([torch.full((3, 16, 16), a)], [torch.full((3, 16, 16), b)])
    c1 = 0.01**2
    assert ssim.compute()["ssim"] == pytest.approx(
        (2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4
    )
    ssim.reset()
    ssim.update(t, t)
    assert ssim.compute()["ssim"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "name, params",
    [("psnr", {"data_range": 0}), ("ssim", {"window_size": 4}), ("ssim", {"data_range": -1})],
)
def test_pixel_metric_bad_parameters(name, params):
    with pytest.raises(ConfigError):
        REGISTRY.metrics.create(name, **params)


# ------------------------------------------------------------------ lpips
def test_lpips_metric_needs_real_weights(hub_dir):
    with pytest.raises(WeightsNotFoundError, match=r"alexnet-owt-7be5be79\.pth"):
        REGISTRY.metrics.create("lpips")


def test_lpips_metric_equals_lpips_package_per_image(hub_dir):
    fake_torchvision_weights(hub_dir, "alexnet", seed=1)
    metric = REGISTRY.metrics.create("lpips")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="alex", verbose=False).eval()  # the trunk from the same cache
    p = [torch.rand(3, 40, 64), torch.rand(3, 48, 48), torch.rand(3, 33, 70)]
    t = [torch.rand_like(x) for x in p]
    metric.update(p[:2], t[:2])
    metric.update(p[2:], t[2:])
    with torch.no_grad():
        expected = [
            float(reference(a[None], b[None], normalize=True)) for a, b in zip(p, t, strict=True)
        ]
    assert metric.compute()["lpips"] == pytest.approx(sum(expected) / 3, rel=1e-5)


# ------------------------------------------------------------------ Fréchet metrics
@pytest.fixture(scope="module")
def fd_effnet():
    return REGISTRY.metrics.create("fd_effnet", size=64, method="eigh")


def test_fd_effnet_matches_the_shared_frechet_function(fd_effnet):
    p, t = _pair(5, (6, 3, 48, 48))
    t = (t * 0.5 + 0.25).clamp(0, 1)
    fd_effnet.reset()
    fd_effnet.update(p[:4], t[:4])
    fd_effnet.update(list(p[4:]), list(t[4:]))
    out = fd_effnet.compute()
    assert set(out) == {"fd_effnet", "fd_effnet_mean", "fd_effnet_cov"}
    assert fd_effnet.distributional and not REGISTRY.metrics.create("psnr").distributional
    with torch.no_grad():
        f_p = fd_effnet.extractor(F.interpolate(p, size=(64, 64), mode="bilinear", antialias=True))
        f_t = fd_effnet.extractor(F.interpolate(t, size=(64, 64), mode="bilinear", antialias=True))
    assert f_p.shape == (6, 1280)
    expected = frechet_from_features(f_p, f_t, method="eigh")
    assert out["fd_effnet"] == pytest.approx(expected["total"], rel=1e-4)
    assert out["fd_effnet_mean"] == pytest.approx(expected["mean_term"], rel=1e-4)
    assert out["fd_effnet"] == pytest.approx(out["fd_effnet_mean"] + out["fd_effnet_cov"])
    assert out["fd_effnet"] > 0
    fd_effnet.reset()
    fd_effnet.update(t, t)
    assert fd_effnet.compute()["fd_effnet"] == pytest.approx(0.0, abs=1e-3)


def test_rfid_needs_the_fid_inception_weights(hub_dir):
    with pytest.raises(WeightsNotFoundError) as info:
        REGISTRY.metrics.create("rfid")
    assert "pt_inception-2015-12-05-6726825d.pth" in str(info.value)
    assert str(hub_dir) in str(info.value)


def _fake_fid_state(seed=0):
    """A random state dict with the layout of pytorch-fid's file (laid out on the meta device)."""
    from torchvision.models.inception import Inception3

    with torch.device("meta"):
        layout = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    g, state = torch.Generator().manual_seed(seed), {}
    for name, ref in layout.items():
        if name.endswith("running_var") or (name.endswith(".weight") and ref.ndim == 1):
            state[name] = torch.ones(ref.shape)
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.zeros((), dtype=torch.long)
        elif ref.ndim >= 2:
            state[name] = torch.randn(ref.shape, generator=g) * (2.0 / ref[0].numel()) ** 0.5
        else:
            state[name] = torch.zeros(ref.shape)
    return state


def test_rfid_loads_a_state_dict_of_the_fid_layout(hub_dir):
    from atoken.plugins.metrics.inception import FID_WEIGHTS_FILE

    hub_dir.mkdir(parents=True)
    state = _fake_fid_state()
    torch.save(state, hub_dir / FID_WEIGHTS_FILE)
    rfid = REGISTRY.metrics.create("rfid", batch_size=2, method="eigh")
    assert rfid.extractor.is_fid
    for name, tensor in rfid.extractor.net.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    rfid.update(*_pair(6, (2, 3, 40, 40)))
    assert rfid.prediction_stats.dim == 2048 and rfid.target_stats.count == 2
    out = rfid.compute()
    assert set(out) == {"rfid", "rfid_mean", "rfid_cov"} and out["rfid"] > 0
    assert out["rfid"] == pytest.approx(out["rfid_mean"] + out["rfid_cov"])


def test_rfid_refuses_a_file_of_another_layout(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ConfigError, match="FID Inception"):
        REGISTRY.metrics.create("rfid", weights_path=bad)


def test_fid_blocks_pool_the_tensorflow_way():
    from atoken.plugins.metrics.inception import _blocks

    blocks = _blocks()
    x = torch.rand(1, 2048, 5, 5)
    block = blocks["Mixed_7c"].eval()
    with torch.no_grad():
        ours = block(x)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        assert torch.equal(ours[:, -192:], block.branch_pool(pooled))
        a = blocks["Mixed_5b"].eval()
        y = torch.rand(1, 192, 5, 5)
        avg = F.avg_pool2d(y, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        assert torch.equal(a(y)[:, -32:], a.branch_pool(avg))
