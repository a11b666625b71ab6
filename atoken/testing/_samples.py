"""How the contracts compare samples: as tensors.

A decoded sample is a tensor, something ``torch.as_tensor`` takes, or an object with an
``as_tensor()`` method giving its canonical tensor form (e.g. a set of voxels or Gaussians).
A head whose decoded samples are of another type than its modality's canonical samples says
so with a ``sample_type`` class attribute; the contracts then check that type instead of the
canonical sample's shape.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["as_tensor"]


def as_tensor(sample: Any) -> torch.Tensor:
    """The canonical tensor form of a sample (see the module docstring)."""
    if isinstance(sample, torch.Tensor):
        return sample
    to_tensor = getattr(sample, "as_tensor", None)
    if callable(to_tensor):
        return to_tensor()
    return torch.as_tensor(sample)
