"""Discrete tokens: the FSQ ids of a packed batch, with the coordinates and metadata to decode.

Shapes: ids int [N, G] (G id groups per token), coords int32 [N, 4], seqlens int64 [B].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from atoken.core.errors import LatentValidationError

__all__ = ["DiscreteTokens"]


@attrs.frozen(kw_only=True, eq=False)
class DiscreteTokens:
    """What :meth:`atoken.Tokenizer.tokenize` returns and ``detokenize`` takes.

    Raises:
        LatentValidationError: when ids are not integers ``[N, G]`` or lengths disagree.
    """

    ids: torch.Tensor
    coords: torch.Tensor
    seqlens: torch.Tensor
    modality: tuple[str, ...] = attrs.field(converter=tuple)
    meta: tuple[Mapping[str, Any], ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.ids.ndim != 2 or self.ids.is_floating_point():
            raise LatentValidationError(
                "ids", f"must be an int tensor [N, G], got {tuple(self.ids.shape)} {self.ids.dtype}"
            )
        if self.coords.shape != (self.ids.shape[0], 4):
            raise LatentValidationError(
                "coords", f"must be [{self.ids.shape[0]}, 4], got {tuple(self.coords.shape)}"
            )
        if int(self.seqlens.sum()) != self.ids.shape[0]:
            raise LatentValidationError("seqlens", "must sum to the number of tokens")
        if not len(self.modality) == len(self.meta) == len(self.seqlens):
            raise LatentValidationError("meta", "modality, meta and seqlens must have length B")

    @property
    def batch_size(self) -> int:
        return int(self.seqlens.shape[0])

    def per_sample(self) -> list[torch.Tensor]:
        """The ids of each sample: a list of ``[n_b, G]``."""
        return list(torch.split(self.ids, self.seqlens.tolist()))

    @classmethod
    def from_parts(cls, ids: torch.Tensor, latent: Any) -> DiscreteTokens:
        """Ids with the coords, seqlens, modality names and metadata of ``latent``."""
        return cls(
            ids=ids,
            coords=latent.coords,
            seqlens=latent.seqlens,
            modality=latent.modality,
            meta=latent.meta,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "coords": self.coords,
            "seqlens": self.seqlens,
            "modality": list(self.modality),
            "meta": [dict(m) for m in self.meta],
        }
