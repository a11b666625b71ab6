"""A head's output -> samples: the decoder's tokens of one modality through its head, then the
modality's denormalise and unpatchify.

Shapes:
    N tokens of the samples of one modality, C' decoder width
    d the modality's values per token (``value_dim``), k <= d the values a head predicts
    tokens [N, C'] -> head -> values [N, k] (k = d, or ``content_dim`` for a head that
    predicts the content values only) -> denormalize -> zero-pad to [N, d] -> unpatchify

A head with ``to_samples`` (3D Gaussians, a plugin's own form) turns its output into samples
itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.boundary import BoundaryChecks
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality

__all__ = ["head_samples"]


def head_samples(
    mod: Modality,
    head: nn.Module,
    tokens: torch.Tensor,
    latent: SparseLatent,
    checks: BoundaryChecks | None = None,
) -> list[Any]:
    """Decoder tokens ``[N, C']`` of samples of modality ``mod`` (``latent`` holds their
    coords and meta) through ``head``, back to samples.

    Raises:
        HeadOutputError: a head without ``to_samples`` that gives neither ``[N, d]`` values
            nor ``[N, content_dim]`` content values (a ``ModalityInputError`` and a
            ``ConfigError`` naming the modality, its plugin, the head and its plugin, as
            ``checks`` recorded them).
    """
    if hasattr(head, "to_samples"):
        return list(head.to_samples(head(tokens, latent), latent, mod))
    if getattr(head, "partial_values", False) and mod.content_dim < mod.value_dim:
        # Predict the content values only (images: slot 0 of 4): exact, and a quarter of
        # the head's work and memory.
        values = head(tokens, latent, num_values=mod.content_dim)  # [N, content_dim]
    else:
        values = head(tokens, latent)  # [N, d]
    (BoundaryChecks() if checks is None else checks).head_values(mod, head, values, tokens.shape[0])
    values = mod.denormalize(values.float())  # [N, k]
    if values.shape[1] < mod.value_dim:
        values = F.pad(values, (0, mod.value_dim - values.shape[1]))  # [N, d], zero padding
    return mod.unpack(latent.replace(feats=values))
