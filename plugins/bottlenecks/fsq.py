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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atoken.core.components import BottleneckOutput
from atoken.core.errors import ConfigError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["FSQBottleneck", "codebook_usage", "codebook_usage_per_group"]


def _round_ste(z: torch.Tensor) -> torch.Tensor:
    return z + (z.round() - z).detach()


class FSQBottleneck(nn.Module):
    """Finite scalar quantization of a projected latent.

    Args:
        in_dim: encoder width.
        levels: quantization levels per channel of one group, each >= 3
            (e.g. ``[8, 8, 8, 5, 5, 5]``, or the official ``[4] * 6`` with 8 groups).
        groups: independent codebooks; the latent has ``groups * len(levels)`` channels.
        eps: the bound's margin (1e-3, as the oracle and the official ``FSQ.bound``).
        bias: a bias on the projection (the official ``proj`` has none).
        logvar: the projection also gives a log-variance, which is ignored: the codes
            quantize the posterior mean, as the official So/D does.
    """

    is_discrete = True

    def __init__(
        self,
        *,
        in_dim: int,
        levels: Sequence[int] = (8, 8, 8, 5, 5, 5),
        groups: int = 1,
        eps: float = 1e-3,
        bias: bool = True,
        logvar: bool = False,
    ) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 3 for v in levels):
            raise ConfigError(f"fsq: every level must be >= 3, got {levels}")
        if groups < 1 or in_dim < 1:
            raise ConfigError(f"fsq: groups and in_dim must be >= 1, got {groups}, {in_dim}")
        self.in_dim, self.levels, self.groups, self.eps = in_dim, levels, groups, eps
        self.dim = len(levels)
        self.latent_dim = groups * self.dim
        self.codebook_size = int(torch.tensor(levels).prod())
        self.logvar = bool(logvar)
        self.proj = nn.Linear(in_dim, self.latent_dim * (2 if self.logvar else 1), bias=bool(bias))
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), 0).to(torch.int32)
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """The codebook size of each group: ``(prod(levels),) * groups``."""
        return (self.codebook_size,) * self.groups

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        half_l = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z [N, latent_dim]`` -> ``(z_q [N, latent_dim] float32, ids int32 [N, groups])``."""
        N = z.shape[0]
        if z.shape[-1] != self.latent_dim:
            raise ConfigError(f"fsq: expected {self.latent_dim} channels, got {z.shape[-1]}")
        with torch.autocast(z.device.type, enabled=False):
            zg = z.float().reshape(N, self.groups, self.dim)  # [N, G, d]
            half_width = self._levels // 2
            codes = _round_ste(self._bound(zg)) / half_width  # [N, G, d] in [-1, 1]
            level_idx = codes * half_width + half_width  # [N, G, d] in 0..L-1
            ids = (level_idx * self._basis).sum(-1).round().to(torch.int32)  # [N, G]
        return codes.reshape(N, self.latent_dim), ids

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids [N, groups]`` -> ``z_q [N, latent_dim]`` float32 (exact inverse of ids)."""
        if ids.ndim != 2 or ids.shape[1] != self.groups:
            raise ConfigError(f"fsq: ids must be [N, {self.groups}], got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ConfigError(f"fsq: ids must lie in [0, {self.codebook_size})")
        half_width = self._levels // 2
        level_idx = (ids.long()[..., None] // self._basis) % self._levels  # [N, G, d]
        codes = (level_idx - half_width) / half_width  # [N, G, d]
        return codes.float().reshape(ids.shape[0], self.latent_dim)

    def forward(self, x: torch.Tensor) -> BottleneckOutput:
        """``x [N, in_dim]`` -> codes ``[N, latent_dim]`` and ids ``[N, groups]``."""
        z = self.proj(x)  # [N, latent_dim] (or [N, 2 * latent_dim] = [mean | logvar])
        z_q, ids = self.quantize(z[:, : self.latent_dim])
        return BottleneckOutput(latent=z_q, ids=ids)


def codebook_usage_per_group(ids: torch.Tensor, codebook_size: int) -> list[dict[str, float]]:
    """Per group of ids ``[N, G]``: the share of the codebook used and the perplexity
    (``exp`` of the entropy of the code frequencies; ``codebook_size`` at most)."""
    stats = []
    for g in range(ids.shape[1] if ids.ndim == 2 else 0):
        counts = torch.bincount(ids[:, g].long(), minlength=codebook_size).double()
        if counts.sum() == 0:
            stats.append({"usage": 0.0, "perplexity": 0.0})
            continue
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        stats.append(
            {"usage": float((counts > 0).double().mean()), "perplexity": float(entropy.exp())}
        )
    return stats


def codebook_usage(ids: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Share of the codebook used and perplexity (per group, averaged) of ids ``[N, G]``."""
    if ids.numel() == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    stats = codebook_usage_per_group(ids, codebook_size)
    return {k: sum(s[k] for s in stats) / len(stats) for k in ("usage", "perplexity")}


@hookimpl
def register_bottlenecks(register) -> None:
    register("fsq", FSQBottleneck)
