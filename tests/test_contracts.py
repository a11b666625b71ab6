"""The contract classes, run over every registered component (ours and third parties')."""

from __future__ import annotations

import pytest
import torch

import atoken
from atoken.testing.contracts import (
    AttentionBackendContract,
    BottleneckContract,
    HeadContract,
    LossContract,
    ModalityContract,
    TextEncoderContract,
    TokenizerRoundTripContract,
)
from atoken.testing.render_contracts import RendererContract
from atoken.testing.stage_contracts import StageTransformContract

REGISTRY = atoken.get_registry()


class TestEveryModality(ModalityContract):
    @pytest.fixture(params=REGISTRY.modalities.names())
    def modality(self, request):
        return atoken.get_registry().modalities.create(request.param)


class TestEveryLoss(LossContract):
    @pytest.fixture(params=REGISTRY.losses.names())
    def loss(self, request):
        try:
            return atoken.get_registry().losses.create(request.param)
        except atoken.WeightsNotFoundError as exc:  # pretrained weights not on this machine
            pytest.skip(str(exc))


class TestEveryBottleneck(BottleneckContract):
    @pytest.fixture(params=REGISTRY.bottlenecks.names())
    def bottleneck(self, request):
        return atoken.get_registry().bottlenecks.create(request.param, in_dim=16)


class TestEveryAttentionBackend(AttentionBackendContract):
    @pytest.fixture(params=REGISTRY.attention_backends.names())
    def backend(self, request):
        if request.param == "xformers" and not torch.cuda.is_available():
            pytest.skip("xformers has no CPU kernels (tests/core/test_attention.py has GPU tests)")
        return atoken.get_registry().attention_backends.create(request.param)


class TestEveryTextEncoder(TextEncoderContract):
    @pytest.fixture(params=REGISTRY.text_encoders.names())
    def text_encoder(self, request):
        from atoken.text import build_text_encoder

        try:
            return build_text_encoder(request.param, {})
        except atoken.WeightsNotFoundError as exc:  # pretrained weights not on this machine
            pytest.skip(str(exc))


# ------------------------------------------------------------- the contracts can fail
class _LossyImage(atoken.get_registry().modalities.get("image")):
    """Drops the last token's values: a broken round trip the contract must catch."""

    def unpatchify(self, values, coords, meta):
        values = values.clone()
        values[-1] = 0
        return super().unpatchify(values, coords, meta)


class _Permissive(atoken.get_registry().modalities.get("image")):
    def invalid_examples(self):
        return [torch.rand(3, 8, 8)]  # valid input listed as invalid: must be caught


def test_modality_contract_catches_a_lossy_round_trip():
    contract = ModalityContract()
    with pytest.raises(AssertionError):
        contract.test_roundtrip_is_exact.hypothesis.inner_test(contract, _LossyImage(), 0)


def test_modality_contract_catches_a_missing_typed_error():
    with pytest.raises(pytest.fail.Exception):
        ModalityContract().test_bad_input_raises_typed_error(_Permissive())


def test_loss_contract_catches_a_loss_without_gradient():
    def detached(prediction, target, context):
        return (prediction.detach() - target).abs().mean()

    contract = LossContract()
    inputs = (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), {})
    with pytest.raises((AssertionError, RuntimeError)):
        contract.test_scalar_finite_with_gradient(detached, inputs)


class _RoundingQuantizer(torch.nn.Module):
    """A small discrete bottleneck (round to 0.5 steps) for exercising the contract."""

    in_dim = latent_dim = 16

    def __init__(self, broken: bool = False):
        super().__init__()
        self.broken = broken

    def quantize(self, z):
        ids = (z.clamp(-2, 2) * 2).round().long() + 4
        return (ids - 4).float() / 2, ids

    def ids_to_codes(self, ids):
        codes = (ids - 4).float() / 2
        return codes + 0.25 if self.broken else codes

    def forward(self, x):
        from atoken.core.components import BottleneckOutput

        z_q, ids = self.quantize(x)
        return BottleneckOutput(latent=z_q, ids=ids)


def test_bottleneck_contract_passes_and_fails():
    contract = BottleneckContract()
    good, bad = _RoundingQuantizer(), _RoundingQuantizer(broken=True)
    contract.test_ids_round_trip.hypothesis.inner_test(contract, good, 5, 0)
    contract.test_shapes.hypothesis.inner_test(contract, good, 5, 0)
    with pytest.raises(AssertionError):
        contract.test_ids_round_trip.hypothesis.inner_test(contract, bad, 5, 0)


# ------------------------------------------------------------- through the public tokenizer
class TestEveryModalityThroughTheTokenizer(TokenizerRoundTripContract):
    @pytest.fixture(params=REGISTRY.modalities.names())
    def name(self, request):
        return request.param


def _head_cases() -> list[tuple[str, str]]:
    """Each registered head with a modality it decodes (one whose default head it is)."""
    from atoken.modalities import DEFAULT_MODALITY

    cases = []
    for head in REGISTRY.heads.names():
        users = [
            m
            for m in REGISTRY.modalities.names()
            if getattr(REGISTRY.modalities.get(m), "default_head", None) == head
        ]
        cases.append((head, users[0] if users else DEFAULT_MODALITY))
    return cases


class TestEveryHead(HeadContract):
    @pytest.fixture(params=_head_cases(), ids=lambda case: f"{case[0]}-{case[1]}")
    def head_and_modality(self, request):
        return request.param


def test_several_contract_subclasses_run_in_one_session(tmp_path):
    """Hypothesis' differing_executors check must not fire for a second subclass."""
    import subprocess
    import sys

    (tmp_path / "test_two.py").write_text(
        "from atoken.testing.contracts import ModalityContract\n"
        "class TestA(ModalityContract):\n    modality_name = 'image'\n"
        "class TestB(ModalityContract):\n    modality_name = 'video'\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:]
    assert "12 passed" in out.stdout  # 6 contract tests x 2 subclasses


class TestEveryStageTransform(StageTransformContract):
    @pytest.fixture(params=REGISTRY.stage_transforms.names())
    def transform_name(self, request):
        return request.param


class TestEveryRenderer(RendererContract):
    @pytest.fixture(params=REGISTRY.renderers.names())
    def renderer_name_under_test(self, request):
        return request.param
