"""The ``lpips`` loss against the ``lpips`` package itself, and its weight handling.

No real torchvision trunk ships with atoken, so the oracle runs on stand-in files: a random
AlexNet state dict saved under torchvision's cache name. ``lpips.LPIPS`` loads it through
torchvision's own cache lookup, atoken through its loader; the two must agree exactly.
Images are resized to 64 here (224 in use) to keep the suite fast on two cores.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import lpips
import pytest
import torch
import torch.nn.functional as F

import atoken
from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.losses.lpips import LPIPSLoss
from atoken.losses.weight_files import TORCHVISION_WEIGHTS, hub_checkpoint_dir
from tests.losses._fakes import fake_torchvision_weights

SIZE = 64


def _images(seed, shape=(2, 3, 40, 48)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g), torch.rand(*shape, generator=g)


def _resize(x, size=SIZE):
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """(ours, reference, hub checkpoints dir): both built from one stand-in AlexNet file in a
    private hub cache; the reference is ``lpips.LPIPS(net='alex')`` as its users build it."""
    hub = tmp_path_factory.mktemp("hub")
    fake_torchvision_weights(hub / "checkpoints", "alexnet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "get_dir", lambda: str(hub))
        ours = atoken.get_registry().losses.create("lpips", net="alex", size=SIZE)
        ours.network()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = lpips.LPIPS(net="alex", verbose=False).eval()
    return ours, reference, hub / "checkpoints"


@pytest.fixture(scope="module")
def random_trunk():
    return LPIPSLoss(net="alex", size=SIZE, random_backbone_for_tests=True)


def test_missing_trunk_raises_before_any_download(hub_dir):
    with pytest.raises(WeightsNotFoundError) as info:
        atoken.get_registry().losses.create("lpips", net="alex")
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(hub_dir) in message
    assert "weights_path" in message and "download" in message
    with pytest.raises(WeightsNotFoundError, match=r"vgg16-397923af\.pth"):
        atoken.get_registry().losses.create("lpips")  # default trunk: vgg


def test_missing_explicit_path_is_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pth"):
        LPIPSLoss(net="vgg", weights_path=tmp_path / "nope.pth")


def test_loss_equals_lpips_package_on_the_same_cached_trunk(cached):
    ours, reference, checkpoints = cached
    assert ours.is_lpips and ours.weights_path == checkpoints / TORCHVISION_WEIGHTS["alexnet"][0]
    p, t = _images(0)
    with torch.no_grad():
        expected = reference(_resize(p), _resize(t), normalize=True).mean()
        assert torch.allclose(ours(p, t, {}), expected, rtol=1e-5, atol=1e-7)


def test_list_of_sizes_equals_lpips_on_each_resized_image(cached):
    ours, reference, _ = cached
    p = [torch.rand(3, 40, 60), torch.rand(3, SIZE, SIZE), torch.rand(3, 100, 30)]
    t = [torch.rand_like(v) for v in p]
    with torch.no_grad():
        per_image = [
            reference(_resize(a[None]), _resize(b[None]), normalize=True)
            for a, b in zip(p, t, strict=True)
        ]
        assert torch.allclose(ours(p, t, {}), torch.stack(per_image).mean(), rtol=1e-5, atol=1e-7)


def test_explicit_weights_path_loads_the_same_trunk(cached, tmp_path):
    ours, _, checkpoints = cached
    copy_path = tmp_path / "my-alexnet.pth"
    copy_path.write_bytes((checkpoints / TORCHVISION_WEIGHTS["alexnet"][0]).read_bytes())
    other = LPIPSLoss(net="alex", weights_path=copy_path)
    assert other.weights_path == copy_path
    for (name, a), b in zip(
        ours.network().state_dict().items(), other.network().state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_random_trunk_wiring_matches_lpips_with_the_same_state(cached, random_trunk):
    assert not random_trunk.is_lpips
    assert "NOT LPIPS" in random_trunk.label and "NOT LPIPS" in repr(random_trunk)
    reference = copy.deepcopy(cached[1])
    reference.load_state_dict(random_trunk.network().state_dict())
    p, t = _images(1)
    with torch.no_grad():
        expected = reference(_resize(p), _resize(t), normalize=True).mean()
        assert torch.allclose(random_trunk(p, t, {}), expected, rtol=1e-5, atol=1e-7)


def test_random_trunk_is_refused_as_the_lpips_metric(random_trunk):
    with pytest.raises(ConfigError, match="NOT LPIPS"):
        atoken.get_registry().metrics.create("lpips", model=random_trunk)


def test_zero_for_identical_images_and_gradient_otherwise(random_trunk):
    p, t = _images(2)
    assert float(random_trunk(t, t, {})) == pytest.approx(0.0, abs=1e-7)
    p.requires_grad_(True)
    value = random_trunk(p, t, {})
    (grad,) = torch.autograd.grad(value, p)
    assert value.item() > 0 and float(grad.abs().sum()) > 0
    assert not any(q.requires_grad for q in random_trunk.parameters())


def test_training_mode_keeps_the_network_deterministic(random_trunk):
    p, t = _images(4)
    first = random_trunk(p, t, {})
    random_trunk.train()
    try:
        assert not random_trunk.network().training  # its dropout layers stay off
        assert torch.equal(random_trunk(p, t, {}), first)
    finally:
        random_trunk.eval()


def test_bad_parameters():
    with pytest.raises(ConfigError):
        LPIPSLoss(net="squeeze", random_backbone_for_tests=True)
    with pytest.raises(ConfigError):
        LPIPSLoss(net="alex", size=-1, random_backbone_for_tests=True)


def test_a_file_that_is_not_a_torchvision_trunk(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match=r"features\.0\.weight"):
        LPIPSLoss(net="alex", weights_path=bad).network()


_REAL = hub_checkpoint_dir() / TORCHVISION_WEIGHTS["alexnet"][0]


@pytest.mark.skipif(not Path(_REAL).is_file(), reason=f"real AlexNet weights not at {_REAL}")
def test_real_weights_when_present():  # pragma: no cover - machine dependent
    p, t = _images(5)
    ours = LPIPSLoss(net="alex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="alex", verbose=False).eval()
    with torch.no_grad():
        expected = reference(_resize(p, 224), _resize(t, 224), normalize=True).mean()
        assert torch.allclose(ours(p, t, {}), expected, rtol=1e-5)


def test_missing_weights_say_how_to_give_them_in_a_run_file_and_in_python(tmp_path, monkeypatch):
    from atoken.core.errors import WeightsNotFoundError
    from atoken.losses.weight_files import locate_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(WeightsNotFoundError) as err:
        locate_weights("net.pth", path=None, what="a test network", url="https://example.org")
    message = str(err.value)
    assert 'params = { weights_path = "/path/to/net.pth" }' in message  # the run-file form
    assert "weights_path='/path/to/net.pth'" in message  # and the Python one
