"""The ``l1`` and ``kl`` losses and the shared image-batch helper."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import atoken
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.losses.image_batch import check_size, image_pairs, resized_batch


def _l1():
    return atoken.get_registry().losses.create("l1")


# ------------------------------------------------------------------ l1
def test_l1_batch_equals_hand_computation():
    g = torch.Generator().manual_seed(0)
    p, t = torch.rand(3, 3, 8, 5, generator=g), torch.rand(3, 3, 8, 5, generator=g)
    expected = sum(float((p[i] - t[i]).abs().sum()) / (3 * 8 * 5) for i in range(3)) / 3
    assert float(_l1()(p, t, {})) == pytest.approx(expected, rel=1e-6)


def test_l1_list_is_mean_over_samples_not_pixels():
    small_p, small_t = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)  # error 1 on 12 values
    big_p, big_t = torch.zeros(3, 20, 20), torch.zeros(3, 20, 20)  # error 0 on 1200 values
    value = _l1()([small_p, big_p], [small_t, big_t], {})
    assert float(value) == pytest.approx(0.5)  # per-sample means 1 and 0; a pixel mean is 0.01


def test_l1_accepts_video_shaped_samples():
    p, t = torch.zeros(2, 3, 4, 8, 8), torch.full((2, 3, 4, 8, 8), 0.25)
    assert float(_l1()(p, t, {})) == pytest.approx(0.25)


@given(h=st.integers(1, 6), w=st.integers(1, 6), b=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_l1_properties(h, w, b, seed):
    g = torch.Generator().manual_seed(seed)
    p, t = torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)
    loss = _l1()
    assert float(loss(p, t, {})) == pytest.approx(float(loss(t, p, {})))
    assert float(loss(p, p, {})) == 0.0
    assert float(loss(p, t, {})) >= 0.0
    listed = loss(list(p), list(t), {})
    assert float(listed) == pytest.approx(float(loss(p, t, {})), rel=1e-5)


def test_l1_gradient_is_sign_over_count():
    p = torch.tensor([[[[0.2, 0.8]]]]).expand(1, 3, 1, 2).clone().requires_grad_(True)
    t = torch.full((1, 3, 1, 2), 0.5)
    _l1()(p, t, {}).backward()
    assert torch.allclose(p.grad[0, :, 0], torch.tensor([-1.0, 1.0]).expand(3, 2) / 6)


@pytest.mark.parametrize(
    "prediction, target",
    [
        (torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 5)),
        (torch.rand(0, 3, 4, 4), torch.rand(0, 3, 4, 4)),
        ([torch.rand(3, 4, 4)], [torch.rand(3, 4, 4), torch.rand(3, 4, 4)]),
        ([torch.rand(3, 4, 4)], [torch.rand(3, 5, 4)]),
        ("not an image", torch.rand(1, 3, 4, 4)),
        ([], []),
    ],
)
def test_l1_rejects_mismatched_inputs(prediction, target):
    with pytest.raises(ModalityInputError):
        _l1()(prediction, target, {})


# ------------------------------------------------------------------ kl
def test_kl_returns_the_context_term_with_its_gradient():
    loss = atoken.get_registry().losses.create("kl")
    mean = torch.randn(5, 4, requires_grad=True)
    term = 0.5 * mean.square().sum(-1).mean()
    value = loss(None, None, {"kl": term, "other": 3})
    assert value is not None and value.ndim == 0 and torch.equal(value, term)
    value.backward()
    assert torch.allclose(mean.grad, mean.detach() / 5)


def test_kl_missing_key_is_a_typed_error_naming_the_key():
    loss = atoken.get_registry().losses.create("kl", key="kl_video")
    with pytest.raises(ConfigError, match="kl_video"):
        loss(None, None, {"kl": torch.tensor(1.0)})


@pytest.mark.parametrize("bad", [torch.ones(3), 0.5, "x"])
def test_kl_rejects_non_scalar_terms(bad):
    with pytest.raises(ConfigError, match="scalar"):
        atoken.get_registry().losses.create("kl")(None, None, {"kl": bad})


def test_kl_example_inputs_need_grad():
    _, _, context = atoken.get_registry().losses.create("kl").example_inputs()
    assert context["kl"].requires_grad


def test_kl_rejects_a_bad_key():
    with pytest.raises(ConfigError):
        atoken.get_registry().losses.create("kl", key="")


# ------------------------------------------------------------------ image helper
def test_resized_batch_shapes_and_passthrough():
    x = torch.rand(2, 3, 16, 16)
    assert resized_batch(x, (16, 16), who="t") is x  # already at size: untouched
    assert resized_batch(x, (8, 12), who="t").shape == (2, 3, 8, 12)
    mixed = [torch.rand(3, 10, 30), torch.rand(3, 224, 224), torch.rand(3, 400, 7)]
    out = resized_batch(mixed, (224, 224), who="t")
    assert out.shape == (3, 3, 224, 224) and torch.equal(out[1], mixed[1])


def test_resized_batch_of_a_constant_image_stays_constant():
    out = resized_batch([torch.full((3, 37, 53), 0.3)], (224, 224), who="t")
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-6)


def test_image_helper_errors():
    with pytest.raises(ModalityInputError, match="different sizes"):
        resized_batch([torch.rand(3, 4, 4), torch.rand(3, 5, 4)], None, who="t")
    with pytest.raises(ModalityInputError, match=r"\[3, H, W\]"):
        image_pairs([torch.rand(4, 4, 4)], [torch.rand(4, 4, 4)], who="t")
    with pytest.raises(ModalityInputError, match="float"):
        image_pairs([torch.zeros(3, 4, 4, dtype=torch.uint8)], [torch.rand(3, 4, 4)], who="t")
    with pytest.raises(ConfigError):
        check_size(0, who="t")
    assert check_size(224, who="t") == (224, 224) and check_size((10, 20), who="t") == (10, 20)


def test_mse_is_squared_error_per_sample_then_mean():
    mse = atoken.get_registry().losses.create("mse")
    a = [torch.zeros(3, 2, 2), torch.zeros(3, 4, 4)]
    b = [torch.full((3, 2, 2), 0.5), torch.ones(3, 4, 4)]
    assert float(mse(a, b, {})) == pytest.approx((0.25 + 1.0) / 2)
    x = torch.rand(2, 3, 5, 5, requires_grad=True)
    y = torch.rand(2, 3, 5, 5)
    value = mse(x, y, {})
    assert float(value) == pytest.approx(float(((x - y) ** 2).mean()))
    value.backward()
    assert torch.allclose(x.grad, 2 * (x - y).detach() / x[0].numel() / 2)
    with pytest.raises(atoken.ModalityInputError, match="mse"):
        mse([torch.zeros(3, 2, 2)], [torch.zeros(3, 2, 3)], {})
