"""The ``distill`` loss: hand-computed KL, open_clip's distillation loss as oracle, typed errors."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from open_clip.loss import DistillClipLoss
from torch import nn

import atoken
from atoken.core.errors import (
    ConfigError,
    EmbeddingSizeError,
    ModalityInputError,
    WeightsNotFoundError,
)
from atoken.losses.distill import DistillLoss, distill_kl


class FixedTeacher(nn.Module):
    """A teacher whose image embedding is a fixed row per image (picked by mean intensity)."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.rows = rows
        self.anchor = nn.Parameter(torch.zeros(()))  # so the module has a device

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows[: x.shape[0]]


def test_kl_by_hand():
    # Two texts, one image: teacher logits [2, 0], student [0, 0], tau 2.
    p = torch.softmax(torch.tensor([1.0, 0.0]), dim=0)  # [2/2, 0/2]
    expected = float((p * (p.log() - math.log(0.5))).sum())
    got = distill_kl(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]), 2.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(distill_kl(torch.tensor([[3.0, 1.0]]), torch.tensor([[3.0, 1.0]]), 2.0)) == 0.0


@given(b=st.integers(1, 5), t=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_kl_matches_open_clip_distillation_minus_teacher_entropy(b, t, seed):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(b, t, generator=g, dtype=torch.float64) * 3
    student = torch.randn(b, t, generator=g, dtype=torch.float64) * 3
    tau = 2.0
    cross = DistillClipLoss().dist_loss(teacher / tau, student / tau)  # mean_b H(p_t, p_s)
    p = torch.softmax(teacher / tau, dim=1)
    entropy = -(p * torch.log_softmax(teacher / tau, dim=1)).sum(1).mean()
    assert float(distill_kl(teacher, student, tau)) == pytest.approx(
        float(cross - entropy), rel=1e-9, abs=1e-12
    )
    ref = F.kl_div(
        torch.log_softmax(student / tau, 1),
        torch.log_softmax(teacher / tau, 1),
        reduction="batchmean",
        log_target=True,
    )
    assert float(distill_kl(teacher, student, tau)) == pytest.approx(float(ref), abs=1e-12)


def test_loss_value_with_a_fixed_teacher():
    teacher_rows = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    loss = DistillLoss(teacher=FixedTeacher(teacher_rows), logit_scale=4.0, size=8)
    student = F.normalize(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), dim=-1)
    text = torch.eye(2)
    images = torch.rand(2, 3, 8, 8)
    expected = distill_kl(4.0 * teacher_rows @ text.T, 4.0 * student @ text.T, 2.0)
    assert float(loss(student, text, {"images": images})) == pytest.approx(float(expected))
    assert float(loss(teacher_rows, text, {"images": images})) == pytest.approx(0.0, abs=1e-7)


def test_gradient_flows_to_the_student_with_a_random_open_clip_teacher():
    torch.manual_seed(0)
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "patch_size": 8,
            "width": 32,
            "layers": 1,
            "head_width": 16,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    teacher = open_clip.CLIP(**cfg).eval()
    loss = atoken.get_registry().losses.create("distill", teacher=teacher)
    assert loss.scale() == pytest.approx(float(teacher.logit_scale.exp()))
    student = F.normalize(torch.randn(3, 16), dim=-1).requires_grad_(True)
    text = F.normalize(torch.randn(4, 16), dim=-1)
    value = loss(student, text, {"images": [torch.rand(3, 40, 36) for _ in range(3)]})
    assert value.ndim == 0 and float(value.detach()) >= 0
    (grad,) = torch.autograd.grad(value, student)
    assert float(grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in teacher.parameters())


def test_teacher_of_mismatched_embedding_size_is_a_typed_error():
    loss = DistillLoss(teacher=FixedTeacher(torch.eye(3)), size=8)
    with pytest.raises(EmbeddingSizeError, match="3-d"):
        loss(
            F.normalize(torch.rand(2, 4), dim=-1), torch.eye(4), {"images": torch.rand(2, 3, 8, 8)}
        )


def test_missing_weights_say_how_to_provide_them(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="pretrained="):
        atoken.get_registry().losses.create("distill")
    with pytest.raises(WeightsNotFoundError):
        DistillLoss(pretrained=tmp_path / "absent.safetensors")


def test_bad_inputs_raise_typed_errors():
    loss = DistillLoss(teacher=FixedTeacher(torch.eye(2)), size=8)
    with pytest.raises(ModalityInputError):
        loss(torch.rand(2, 2), torch.eye(2), {})  # no images for the teacher
    with pytest.raises(ConfigError):
        DistillLoss(teacher=FixedTeacher(torch.eye(2)), temperature=0)
