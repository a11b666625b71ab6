"""A packed batch of samples of several modalities, grouped by modality.

Shapes:
    B  samples, N tokens of all samples, n_g tokens of group g
    a group holds the samples of one modality: values [n_g, d_g] (d_g = that modality's
    value_dim, so groups cannot share one tensor), coords int32 [n_g, 4], seqlens [B_g]

The tokenizer embeds each group with its modality's own input (the shared patch embedding or
a per-modality projection) and then runs one encoder pass over all samples in batch order:
:meth:`PackedBatch.gather` interleaves per-group rows back into that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch

from atoken.core.errors import LatentValidationError
from atoken.core.latent import SparseLatent

__all__ = ["PackedBatch", "PackedGroup"]


@attrs.frozen
class PackedGroup:
    """The samples of one modality: their positions in the batch and their values."""

    name: str
    indices: tuple[int, ...]
    values: SparseLatent


@attrs.frozen
class PackedBatch:
    """Groups of one modality each; together they hold samples ``0..B-1`` once each."""

    groups: tuple[PackedGroup, ...]
    batch_size: int
    #: for each sample in batch order: (group index, position within the group)
    _where: tuple[tuple[int, int], ...] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        seen = sorted(i for g in self.groups for i in g.indices)
        if seen != list(range(self.batch_size)):
            raise LatentValidationError("seqlens", "groups must hold every sample exactly once")
        where: list[tuple[int, int]] = [(0, 0)] * self.batch_size
        for gi, group in enumerate(self.groups):
            for j, b in enumerate(group.indices):
                where[b] = (gi, j)
        object.__setattr__(self, "_where", tuple(where))

    @classmethod
    def from_groups(cls, groups: Sequence[PackedGroup]) -> PackedBatch:
        return cls(tuple(groups), sum(len(g.indices) for g in groups))

    # ------------------------------------------------------------------ per-sample views
    @property
    def in_order(self) -> bool:
        """One group holding the samples in batch order (no interleaving needed)."""
        return len(self.groups) == 1 and self.groups[0].indices == tuple(range(self.batch_size))

    @property
    def modality(self) -> tuple[str, ...]:
        return tuple(self.groups[gi].name for gi, _ in self._where)

    @property
    def meta(self) -> tuple[dict[str, Any], ...]:
        return tuple(self.groups[gi].values.meta[j] for gi, j in self._where)

    @property
    def seqlens(self) -> torch.Tensor:
        """int64 ``[B]`` in batch order."""
        if not self.groups:
            return torch.zeros(0, dtype=torch.int64)
        if self.in_order:
            return self.groups[0].values.seqlens
        return torch.stack([self.groups[gi].values.seqlens[j] for gi, j in self._where])

    def gather(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-group rows ``parts[g] [n_g, ...]`` -> ``[N, ...]`` in batch order."""
        if self.in_order:
            return parts[0]
        chunks = [
            torch.split(p, g.values.seqlens.tolist())
            for p, g in zip(parts, self.groups, strict=True)
        ]
        return torch.cat([chunks[gi][j] for gi, j in self._where])

    @property
    def coords(self) -> torch.Tensor:
        """int32 ``[N, 4]`` in batch order."""
        if not self.groups:
            return torch.zeros(0, 4, dtype=torch.int32)
        return self.gather([g.values.coords for g in self.groups])

    def sample(self, b: int) -> tuple[PackedGroup, SparseLatent]:
        """Sample ``b``'s group and its values as a one-sample latent."""
        gi, j = self._where[b]
        group = self.groups[gi]
        return group, group.values.unpack()[j]

    def select(self, indices: Sequence[int]) -> PackedBatch:
        """The samples at ``indices`` (in that order) as a new batch, grouped as before."""
        where = self._where
        by_group: dict[int, list[tuple[int, int]]] = {}
        for new, b in enumerate(indices):
            gi, j = where[b]
            by_group.setdefault(gi, []).append((new, j))
        groups = []
        for gi, members in by_group.items():
            group = self.groups[gi]
            groups.append(
                PackedGroup(
                    group.name,
                    tuple(new for new, _ in members),
                    group.values.select([j for _, j in members]),
                )
            )
        return PackedBatch(tuple(groups), len(indices))
