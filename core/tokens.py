"""Discrete tokens: the FSQ ids of a packed batch, with the coordinates and metadata to decode.

Shapes: ids int [N, G] (G id groups per token), coords int32 [N, 4], seqlens int64 [B].

This is what a language-model adapter consumes: one integer per group per token, token ``n``
of sample ``b`` at ``coords[n]``, the samples back to back (``seqlens``), and the size of each
group's codebook (``codebook_sizes``, ``[4096] * 8`` for the official So/D), so group ``g``'s
ids lie in ``[0, codebook_sizes[g])`` (offset them by ``sum(codebook_sizes[:g])`` for one
shared vocabulary).
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

    Attributes:
        ids, coords, seqlens, modality, meta: see the module docstring.
        codebook_sizes: the codebook size of each of the G groups (empty: not known, e.g.
            tokens read from a store written without them).

    Raises:
        LatentValidationError: when ids are not integers ``[N, G]``, lengths disagree, or an
            id lies outside its group's codebook.
    """

    ids: torch.Tensor
    coords: torch.Tensor
    seqlens: torch.Tensor
    modality: tuple[str, ...] = attrs.field(converter=tuple)
    meta: tuple[Mapping[str, Any], ...] = attrs.field(converter=tuple)
    codebook_sizes: tuple[int, ...] = attrs.field(
        default=(), converter=lambda v: tuple(int(x) for x in v)
    )

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
        if self.codebook_sizes:
            G = self.ids.shape[1]
            if len(self.codebook_sizes) != G or min(self.codebook_sizes) < 1:
                raise LatentValidationError(
                    "codebook_sizes", f"must be {G} positive sizes, got {self.codebook_sizes}"
                )
            if self.ids.numel():
                sizes = torch.tensor(self.codebook_sizes, device=self.ids.device)  # [G]
                if bool((self.ids < 0).any()) or bool((self.ids >= sizes).any()):
                    raise LatentValidationError(
                        "ids", f"lie outside their codebooks of sizes {self.codebook_sizes}"
                    )

    @property
    def batch_size(self) -> int:
        return int(self.seqlens.shape[0])

    def per_sample(self) -> list[torch.Tensor]:
        """The ids of each sample: a list of ``[n_b, G]``."""
        return list(torch.split(self.ids, self.seqlens.tolist()))

    @property
    def groups(self) -> int:
        """G, the ids per token."""
        return int(self.ids.shape[1])

    @classmethod
    def from_parts(
        cls, ids: torch.Tensor, latent: Any, codebook_sizes: tuple[int, ...] = ()
    ) -> DiscreteTokens:
        """Ids with the coords, seqlens, modality names and metadata of ``latent``."""
        return cls(
            ids=ids,
            coords=latent.coords,
            seqlens=latent.seqlens,
            modality=latent.modality,
            meta=latent.meta,
            codebook_sizes=codebook_sizes,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "coords": self.coords,
            "seqlens": self.seqlens,
            "modality": list(self.modality),
            "meta": [dict(m) for m in self.meta],
            "codebook_sizes": list(self.codebook_sizes),
        }
