"""The ``fsq`` bottleneck: finite scalar quantization (Mentzer et al. 2023).

Shapes: x [N, in_dim] -> z [N, G * d] (a linear map; d = len(levels), G = groups)
-> codes z_q [N, G * d] in [-1, 1] and ids int32 [N, G] (one id per group).
With ``logvar=True`` the map gives ``[N, 2 * G * d]`` = [mean | logvar] (the official So/D's
``proj``, shared with the continuous So/C) and the mean, the first ``G * d``, is quantized.

Bounding, rounding and index order follow vector-quantize-pytorch's ``FSQ`` exactly (the test
oracle): per channel with L levels, ``half_l = (L - 1)(1 + eps) / 2``, ``offset = 0.5`` for even
L, ``shift = atanh(offset / half_l)``, ``z' = tanh(z + shift) * half_l - offset``, rounded with a
straight-through gradient and divided by ``L // 2``. The id of a group is
``sum_i level_index_i * prod(levels[:i])`` (the first channel is least significant). Quantization
always runs in float32, whatever the autocast state.

Per-group levels (``levels`` a list of ``groups`` lists of ``d`` levels each, as
``to_fsq(bits=...)`` allocates them): group ``g`` quantizes its channel ``i`` to
``levels[g][i]`` levels and its ids lie in ``[0, prod(levels[g]))``; a level of 2 is one bit
(codes -1, 0, the even-L rule above) and a level of 1 drops the channel (its code is always 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from atoken.core.components import BottleneckOutput
from atoken.core.errors import ConfigError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["MAX_CODEBOOK", "FSQBottleneck", "codebook_usage", "codebook_usage_per_group"]


def _round_ste(z: torch.Tensor) -> torch.Tensor:
    return z + (z.round() - z).detach()


class FSQBottleneck(nn.Module):
    """Finite scalar quantization of a projected latent.

    Args:
        in_dim: encoder width.
        levels: quantization levels per channel of one group, each >= 3
            (e.g. ``[8, 8, 8, 5, 5, 5]``, or the official ``[4] * 6`` with 8 groups); or one
            such list per group, all of one length, each level >= 1 (allocated levels).
        groups: independent codebooks; the latent has ``groups * len(levels)`` channels.
        eps: the bound's margin (1e-3, as the oracle and the official ``FSQ.bound``).
        bias: a bias on the projection (the official ``proj`` has none).
        logvar: the projection also gives a log-variance, which is ignored: the codes
            quantize the posterior mean, as the official So/D does.
    """

    is_discrete = True
    exports = ()  # no terms: a loss that reads "kl" has nothing to read

    def __init__(
        self,
        *,
        in_dim: int,
        levels: Sequence[int] | Sequence[Sequence[int]] = (8, 8, 8, 5, 5, 5),
        groups: int = 1,
        eps: float = 1e-3,
        bias: bool = True,
        logvar: bool = False,
    ) -> None:
        super().__init__()
        if groups < 1 or in_dim < 1:
            raise ConfigError(f"fsq: groups and in_dim must be >= 1, got {groups}, {in_dim}")
        table = _level_table(levels, groups)  # [G, d]
        self.in_dim, self.groups, self.eps = in_dim, groups, eps
        self.levels = table[0].tolist() if bool((table == table[0]).all()) else table.tolist()
        self.dim = table.shape[1]
        self.latent_dim = groups * self.dim
        #: codes per group, ``[G]`` (one number when every group has the same levels)
        self.codebook_sizes = [math.prod(int(v) for v in row) for row in table.tolist()]
        if max(self.codebook_sizes) > MAX_CODEBOOK:
            raise ConfigError(
                f"fsq: levels {table.tolist()} give {max(self.codebook_sizes)} codes in a group; "
                f"ids are int32, so a group holds at most {MAX_CODEBOOK} codes (31 bits)"
            )
        self.codebook_size = max(self.codebook_sizes)
        self.logvar = bool(logvar)
        self.proj = nn.Linear(in_dim, self.latent_dim * (2 if self.logvar else 1), bias=bool(bias))
        ones = torch.ones(groups, 1, dtype=torch.int32, device="cpu")
        basis = torch.cumprod(torch.cat([ones, table[:, :-1]], 1), 1).to(torch.int32)  # [G, d]
        device = torch.get_default_device()  # the table is read on the CPU (a meta build too)
        self.register_buffer("_levels", table.to(device), persistent=False)
        self.register_buffer("_basis", basis.to(device), persistent=False)

    @property
    def level_table(self) -> torch.Tensor:
        """The levels of every channel of every group, int32 ``[G, d]`` (1: a dropped channel)."""
        return self._levels

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """``z [N, G, d]`` -> values in ``(-L/2, L/2)`` per channel (0 where ``L = 1``)."""
        levels = self._levels.clamp_min(2)  # a dropped channel (L = 1) is zeroed below
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        bounded = torch.tanh(z + shift) * half_l - offset
        return torch.where(self._levels > 1, bounded, torch.zeros_like(bounded))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z [N, latent_dim]`` -> ``(z_q [N, latent_dim] float32, ids int32 [N, groups])``."""
        N = z.shape[0]
        if z.shape[-1] != self.latent_dim:
            raise ConfigError(f"fsq: expected {self.latent_dim} channels, got {z.shape[-1]}")
        with torch.autocast(z.device.type, enabled=False):
            zg = z.float().reshape(N, self.groups, self.dim)  # [N, G, d]
            half_width = self._levels // 2  # [G, d]; 0 for a dropped channel
            codes = _round_ste(self._bound(zg)) / half_width.clamp_min(1)  # [N, G, d] in [-1, 1]
            level_idx = (codes * half_width + half_width).round().long()  # [N, G, d] in 0..L-1
            # integer arithmetic: a float32 sum is inexact above 2^24 codes per group
            ids = (level_idx * self._basis.long()).sum(-1).to(torch.int32)  # [N, G]
        return codes.reshape(N, self.latent_dim), ids

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids [N, groups]`` -> ``z_q [N, latent_dim]`` float32 (exact inverse of ids)."""
        if ids.ndim != 2 or ids.shape[1] != self.groups:
            raise ConfigError(f"fsq: ids must be [N, {self.groups}], got {tuple(ids.shape)}")
        sizes = torch.tensor(self.codebook_sizes, device=ids.device)  # [G]
        if ids.numel() and (bool((ids < 0).any()) or bool((ids >= sizes).any())):
            raise ConfigError(
                f"fsq: the ids of group g must lie in [0, sizes[g]), sizes {self.codebook_sizes}"
            )
        half_width = self._levels // 2  # [G, d]; 0 for a dropped channel
        level_idx = (ids.long()[..., None] // self._basis) % self._levels  # [N, G, d]
        codes = (level_idx - half_width) / half_width.clamp_min(1)  # [N, G, d]
        return codes.float().reshape(ids.shape[0], self.latent_dim)

    def forward(self, x: torch.Tensor) -> BottleneckOutput:
        """``x [N, in_dim]`` -> codes ``[N, latent_dim]`` and ids ``[N, groups]``."""
        z = self.proj(x)  # [N, latent_dim] (or [N, 2 * latent_dim] = [mean | logvar])
        z_q, ids = self.quantize(z[:, : self.latent_dim])
        return BottleneckOutput(latent=z_q, ids=ids)


#: The most codes one group may have: its ids are int32.
MAX_CODEBOOK = 2**31


def _level_table(levels: Sequence[int] | Sequence[Sequence[int]], groups: int) -> torch.Tensor:
    """The levels of every group's channels, ``int32 [G, d]``; typed errors for bad ones."""
    nested = bool(levels) and not isinstance(levels[0], (int, float))
    if not nested:
        flat = [int(v) for v in levels]
        if not flat or any(v < 3 for v in flat):
            raise ConfigError(f"fsq: every level must be >= 3, got {flat}")
        return torch.tensor([flat] * groups, dtype=torch.int32, device="cpu")
    rows = [[int(v) for v in row] for row in levels]
    if len(rows) != groups or len({len(r) for r in rows}) != 1 or not rows[0]:
        raise ConfigError(f"fsq: per-group levels need {groups} lists of one length, got {rows}")
    if any(v < 1 for r in rows for v in r):
        raise ConfigError(f"fsq: every per-group level must be >= 1, got {rows}")
    return torch.tensor(rows, dtype=torch.int32, device="cpu")


def codebook_usage_per_group(
    ids: torch.Tensor, codebook_size: int | Sequence[int]
) -> list[dict[str, float]]:
    """Per group of ids ``[N, G]``: the share of the codebook used and the perplexity
    (``exp`` of the entropy of the code frequencies; ``codebook_size`` at most).
    ``codebook_size``: one size, or one per group (per-group levels)."""
    stats = []
    for g in range(ids.shape[1] if ids.ndim == 2 else 0):
        size = codebook_size if isinstance(codebook_size, int) else int(codebook_size[g])
        counts = torch.bincount(ids[:, g].long(), minlength=size).double()
        if counts.sum() == 0:
            stats.append({"usage": 0.0, "perplexity": 0.0})
            continue
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        stats.append(
            {"usage": float((counts > 0).double().mean()), "perplexity": float(entropy.exp())}
        )
    return stats


def codebook_usage(ids: torch.Tensor, codebook_size: int | Sequence[int]) -> dict[str, float]:
    """Share of the codebook used and perplexity (per group, averaged) of ids ``[N, G]``."""
    if ids.numel() == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    stats = codebook_usage_per_group(ids, codebook_size)
    return {k: sum(s[k] for s in stats) / len(stats) for k in ("usage", "perplexity")}


@hookimpl
def register_bottlenecks(register) -> None:
    register("fsq", FSQBottleneck)
