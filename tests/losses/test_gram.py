"""The ``gram`` loss and the frozen EfficientNet-Lite0 it runs on (real ImageNet weights)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import atoken
from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.losses.gram import GramLoss, gram_matrix
from atoken.plugins.metrics.effnet import EfficientNetLite0, effnet_weights_path
from tests.losses._fakes import fake_torchvision_weights

SIZE = 64  # the loss resizes to 224 by default; 64 keeps the tests fast


def _photo(name: str, size: int = 224) -> torch.Tensor:
    image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float() / 255
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)


@pytest.fixture(scope="module")
def effnet():
    return EfficientNetLite0()


@pytest.fixture(scope="module")
def gram(effnet):
    loss = atoken.get_registry().losses.create("gram", size=SIZE)
    loss.net = effnet  # share the module-wide network: the same weights, built once
    return loss


# ------------------------------------------------------------------ the network
def test_real_weights_classify_a_real_photo(effnet):
    with torch.no_grad():
        logits = effnet.logits(torch.cat([_photo("chelsea"), _photo("coffee")]))  # [2, 1000]
    assert logits.shape == (2, 1000)
    assert 281 <= int(logits[0].argmax()) <= 285  # a domestic cat (285: Egyptian cat)
    assert int(logits[1].argmax()) in (967, 968)  # espresso / cup
    assert float(logits[0].softmax(-1)[281:286].sum()) > 0.5


def test_a_second_load_gives_identical_logits(effnet):
    x = _photo("astronaut", 96)
    with torch.no_grad():
        assert torch.equal(EfficientNetLite0().logits(x), effnet.logits(x))


def test_shapes_and_frozen(effnet):
    x = torch.rand(2, 3, 64, 96)
    stages = effnet.stages(x)
    assert [tuple(s.shape) for s in stages] == [
        (2, c, 64 // r, 96 // r)
        for c, r in zip((16, 24, 40, 112, 320), (2, 4, 8, 16, 32), strict=True)
    ]
    assert [s.shape[1] for s in effnet.stages(x, (3, 0))] == [112, 16]
    assert effnet.pooled(x).shape == (2, 1280)
    assert not any(p.requires_grad for p in effnet.parameters())
    effnet.train()
    assert not effnet.net.training  # batch-norm statistics never update
    with pytest.raises(ConfigError):
        effnet.stages(x, (5,))


def test_missing_effnet_file_is_a_typed_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"missing\.pth"):
        effnet_weights_path(tmp_path / "missing.pth")
    assert effnet_weights_path().name == "efficientnet-lite0-57934424.pth"


# ------------------------------------------------------------------ the loss
def test_gram_matrix_equals_numpy():
    f = torch.randn(2, 4, 3, 5)
    expected = np.einsum("bchw,bdhw->bcd", f.numpy(), f.numpy()) / (4 * 3 * 5)
    np.testing.assert_allclose(gram_matrix(f).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_loss_equals_hand_computation_over_the_stages(gram, effnet):
    g = torch.Generator().manual_seed(0)
    p, t = torch.rand(2, 3, SIZE, SIZE, generator=g), torch.rand(2, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        expected = 0.0
        for fp, ft in zip(effnet.stages(p), effnet.stages(t), strict=True):
            expected += float((gram_matrix(fp) - gram_matrix(ft)).square().mean())
        assert float(gram(p, t, {})) == pytest.approx(expected, rel=1e-4)


def test_zero_for_identical_images_positive_with_gradient_otherwise(gram):
    t = _photo("chelsea", SIZE)
    assert float(gram(t, t, {})) == 0.0
    p = (t + 0.1 * torch.randn_like(t)).clamp(0, 1).requires_grad_(True)
    value = gram(p, t, {})
    (grad,) = torch.autograd.grad(value, p)
    assert value.item() > 0 and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_layers_weights_and_criterion(gram, effnet):
    p, t = _photo("coffee", SIZE), _photo("chelsea", SIZE)
    terms = []
    for layer in range(5):
        single = GramLoss(size=SIZE, layers=[layer])
        single.net = effnet
        terms.append(float(single(p, t, {})))
    weighted = GramLoss(size=SIZE, layer_weights=[1, 2, 0, 0, 3])
    weighted.net = effnet
    assert float(weighted(p, t, {})) == pytest.approx(
        terms[0] + 2 * terms[1] + 3 * terms[4], rel=1e-4
    )
    assert float(gram(p, t, {})) == pytest.approx(sum(terms), rel=1e-4)
    l1 = GramLoss(size=SIZE, criterion="l1")
    l1.net = effnet
    assert float(l1(p, t, {})) > 0


@settings(max_examples=5)
@given(h=st.integers(8, 80), w=st.integers(8, 80), seed=st.integers(0, 2**16))
def test_list_of_sizes_equals_the_resized_batch(gram, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    p = [torch.rand(3, h, w, generator=g), torch.rand(3, w, h, generator=g)]
    t = [torch.rand(3, h, w, generator=g), torch.rand(3, w, h, generator=g)]
    resize = lambda xs: torch.stack(  # noqa: E731
        [F.interpolate(x[None], size=(SIZE, SIZE), mode="bilinear", antialias=True)[0] for x in xs]
    )
    with torch.no_grad():
        assert float(gram(p, t, {})) == pytest.approx(
            float(gram(resize(p), resize(t), {})), rel=1e-5
        )


@pytest.mark.parametrize(
    "params",
    [
        {"network": "resnet"},
        {"layers": [7]},
        {"layers": []},
        {"layer_weights": [1.0]},
        {"criterion": "huber"},
        {"size": 0},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ConfigError):
        GramLoss(**params)


def test_torchvision_networks_need_their_weights(hub_dir):
    with pytest.raises(WeightsNotFoundError, match=r"vgg16-397923af\.pth"):
        GramLoss(network="vgg16")
    fake_torchvision_weights(hub_dir, "alexnet")
    loss = GramLoss(network="alexnet", size=SIZE)
    p, t = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40)
    assert float(loss(t, t, {})) == 0.0 and float(loss(p, t, {})) > 0
    assert [f.shape[1] for f in loss.network().stages(torch.rand(1, 3, 64, 64), (0, 4))] == [
        64,
        256,
    ]
