"""The ``siglip`` loss: hand-computed values, open_clip's SigLipLoss as oracle, the bias used."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from open_clip.loss import SigLipLoss

import atoken
from atoken.core.errors import EmbeddingSizeError, ModalityInputError
from atoken.losses.siglip import SigLIPLoss, siglip_loss


def _unit(seed: int, n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def test_initialised_to_log10_and_minus10():
    loss = atoken.get_registry().losses.create("siglip")
    assert float(loss.logit_scale.detach()) == pytest.approx(math.log(10.0))
    assert float(loss.logit_bias.detach()) == pytest.approx(-10.0)


def test_value_by_hand_on_two_pairs():
    # image 0 == text 0, image 1 == text 1, the two orthogonal: cosines [[1, 0], [0, 1]].
    img = torch.eye(2, dtype=torch.float64)
    txt = torch.eye(2, dtype=torch.float64)
    loss = SigLIPLoss().double()
    # logits = 10 * cos - 10: positives 0 -> -log sigmoid(0) = log 2 each;
    # negatives -10 -> -log sigmoid(10) = log(1 + e^-10) each; sum over 4 pairs / B=2.
    expected = (2 * math.log(2) + 2 * math.log1p(math.exp(-10))) / 2
    assert float(loss(img, txt, {})) == pytest.approx(expected, rel=1e-6)  # fp32 log 10


def test_value_by_hand_with_shared_captions():
    # Three images, two captions: images 0 and 1 share caption 0, image 2 has caption 1.
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    positives = torch.tensor([[True, False], [True, False], [False, True]])
    scale, bias = torch.tensor(math.log(2.0)), torch.tensor(0.5)
    cos = img @ txt.T
    z = torch.where(positives, 1.0, -1.0).double()
    expected = (
        sum(
            math.log1p(math.exp(-float(z[i, j]) * (2.0 * float(cos[i, j]) + 0.5)))
            for i in range(3)
            for j in range(2)
        )
        / 3
    )
    got = siglip_loss(img, txt, scale, bias, positives)
    assert float(got) == pytest.approx(expected, rel=1e-6)


@given(
    n=st.integers(1, 6),
    d=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    scale=st.floats(-1.0, 5.0),
    bias=st.floats(-12.0, 4.0),
)
def test_matches_open_clip_siglip_loss(n, d, seed, scale, bias):
    img, txt = _unit(seed, n, d), _unit(seed + 1, n, d)
    ours = SigLIPLoss(init_logit_scale=scale, init_logit_bias=bias).double()(img, txt, {})
    oracle = SigLipLoss()(img, txt, torch.tensor(scale).double().exp(), torch.tensor(bias).double())
    assert float(ours) == pytest.approx(float(oracle), rel=1e-9, abs=1e-9)


def test_context_scale_and_bias_are_used_and_get_gradients():
    img, txt = _unit(0, 4, 8).float(), _unit(1, 4, 8).float()
    loss = SigLIPLoss()
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    value = loss(img, txt, {"logit_scale": scale, "logit_bias": bias})
    value.backward()
    assert scale.grad is not None and abs(float(scale.grad)) > 0
    assert bias.grad is not None and abs(float(bias.grad)) > 0
    assert loss.logit_scale.grad is None  # the loss's own parameters were not used
    other = loss(img, txt, {"logit_scale": scale, "logit_bias": torch.tensor(-2.0)})
    assert float(other) != pytest.approx(float(value))  # the bias really enters the loss


def test_training_the_bias_moves_it():
    img, txt = _unit(0, 8, 4).float(), _unit(1, 8, 4).float()
    loss = SigLIPLoss()
    opt = torch.optim.SGD(loss.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss(img, txt, {}).backward()
        opt.step()
    assert float(loss.logit_bias.detach()) != pytest.approx(-10.0)


def test_bad_inputs_raise_typed_errors():
    loss = SigLIPLoss()
    with pytest.raises(EmbeddingSizeError):
        loss(torch.rand(2, 4), torch.rand(2, 5), {})
    with pytest.raises(ModalityInputError):
        loss(torch.rand(2, 4), torch.rand(3, 4), {})  # no positives and B != T
    with pytest.raises(ModalityInputError):
        loss(torch.rand(2, 4), torch.rand(3, 4), {"positives": torch.ones(3, 2, dtype=bool)})
    with pytest.raises(ModalityInputError):
        loss(torch.rand(2, 3, 4), torch.rand(2, 4), {})
