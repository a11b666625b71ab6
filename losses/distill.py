"""The ``distill`` semantic loss: KL from a frozen teacher's image-text similarities.

Shapes: student image embeddings ``[B, D]`` (the prediction), the batch's text embeddings
``[T, D]`` (the target), and ``context["images"]``, the same B images (``[B, 3, H, W]`` or a
list of ``[3, H_i, W_i]`` in [0, 1]) for the teacher. The teacher is an open_clip image tower
whose embedding lives in the same D-dimensional text space (AToken: SigLIP2's image tower,
with SigLIP2's text tower as the text encoder); images are resized to its input size and
normalised as in the ``clip`` loss.

    s_teacher = scale * norm(teacher(images)) @ txt.T              [B, T]
    s_student = scale * img @ txt.T                                [B, T]
    loss = mean_b KL(softmax(s_teacher_b / tau) || softmax(s_student_b / tau))

with tau = 2.0 (the paper's value) and ``scale`` the teacher's ``exp(logit_scale)`` when it
has one, else ``logit_scale`` given here. The softmax runs over the batch's texts; the mean
runs over images (``batchmean``). A teacher whose embedding size is not D raises
``EmbeddingSizeError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import (
    ConfigError,
    EmbeddingSizeError,
    ModalityInputError,
    WeightsNotFoundError,
)
from atoken.losses.clip import CLIPLoss
from atoken.losses.image_batch import image_pairs, resized_batch
from atoken.losses.siglip import check_embeddings
from atoken.plugins.hookspecs import hookimpl

__all__ = ["DistillLoss", "distill_kl"]


def distill_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``mean_b KL(softmax(t_b / tau) || softmax(s_b / tau))`` of logits ``[B, T]``."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    log_p = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)  # [B, T]
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)  # [B, T]
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


class DistillLoss(nn.Module):
    """Distil a frozen teacher's image-text similarity distribution into the student.

    Args:
        teacher: a model with ``encode_image`` (used as is, frozen); overrides the next two.
        model_name: the teacher's open_clip name (default ``"ViT-B-16-SigLIP2"``).
        pretrained: a local open_clip checkpoint for ``model_name`` (required without
            ``teacher``; nothing is downloaded).
        temperature: tau, 2.0.
        logit_scale: the similarity scale when the teacher has no ``logit_scale`` (linear).
        mean, std, size: the teacher's input normalisation and size (see the ``clip`` loss).

    Raises:
        WeightsNotFoundError: neither ``teacher`` nor a local ``pretrained`` file is given.
        ConfigError: a non-positive temperature or scale.
    """

    name = "distill"
    inputs = "embeddings"  # what it consumes (docs/losses.md#inputs)

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        model_name: str = "ViT-B-16-SigLIP2",
        pretrained: str | os.PathLike | None = None,
        temperature: float = 2.0,
        logit_scale: float = 100.0,
        mean: Any = None,
        std: Any = None,
        size: Any = None,
    ) -> None:
        super().__init__()
        for key, value in (("temperature", temperature), ("logit_scale", logit_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"distill: {key} must be a positive number, got {value!r}")
        self.temperature, self.default_scale = float(temperature), float(logit_scale)
        # The teacher's image side is the `clip` loss's frozen tower (resize, normalise, embed).
        try:
            self.teacher = CLIPLoss(
                model=teacher,
                model_name=model_name,
                pretrained=pretrained,
                mean=mean,
                std=std,
                size=size,
            )
        except WeightsNotFoundError as exc:
            raise WeightsNotFoundError(
                f"distill: the teacher's weights are missing. {str(exc).replace('clip: ', '')} "
                "The teacher's image embedding must have the text encoder's size."
            ) from exc

    @staticmethod
    def planned_parameters(
        *, teacher: nn.Module | None = None, model_name: str = "ViT-B-16-SigLIP2", **_: Any
    ) -> int:
        """The parameters of the frozen teacher (the whole open_clip model), counted without
        its weights (``atoken train --plan``)."""
        return CLIPLoss.planned_parameters(model=teacher, model_name=model_name)

    def scale(self) -> float:
        """The similarity scale: the teacher's ``exp(logit_scale)`` or ``logit_scale``."""
        model = self.teacher.model
        value = getattr(model, "logit_scale", None) if model is not None else None
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return float(value.detach().float().exp())
        return self.default_scale

    def teacher_embeddings(self, images: Any) -> torch.Tensor:
        """The teacher's L2-normalised image embeddings ``[B, D_teacher]``."""
        batch, _ = image_pairs(images, images, who="distill")
        self.teacher.network(batch[0].device)
        x = resized_batch(batch, self.teacher.size, who="distill")  # [B, 3, S, S]
        with torch.no_grad():
            return F.normalize(self.teacher.embed(x), dim=-1)  # [B, D_teacher]

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, context: Mapping[str, Any]
    ) -> torch.Tensor:
        check_embeddings(prediction, target, "distill")
        if "images" not in context:
            raise ModalityInputError("distill: the context needs 'images' for the teacher")
        teacher = self.teacher_embeddings(context["images"])  # [B, D_t]
        if teacher.shape[1] != target.shape[1]:
            raise EmbeddingSizeError(
                f"distill: the teacher's image embedding is {teacher.shape[1]}-d but the text "
                f"space is {target.shape[1]}-d; use a teacher from the text encoder's model "
                "(e.g. SigLIP2's image tower with SigLIP2's text tower)"
            )
        if teacher.shape[0] != prediction.shape[0]:
            raise ModalityInputError(
                f"distill: {prediction.shape[0]} student embeddings but {teacher.shape[0]} images"
            )
        scale = self.scale()
        text = target.float()
        s_teacher = scale * teacher.to(text.device) @ text.T  # [B, T]
        s_student = scale * prediction.float() @ text.T  # [B, T]
        return distill_kl(s_teacher, s_student, self.temperature)


@hookimpl
def register_losses(register) -> None:
    register("distill", DistillLoss)
