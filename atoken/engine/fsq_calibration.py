"""Fitting FSQ to a trained continuous latent: per-channel scalar quantizers and bit allocation.

``to_fsq`` (``atoken.engine.transforms``) switches a ``kl`` tokenizer to ``fsq`` on its
posterior mean.
This module holds the closed-form part of that switch, measured on calibration latents:

    calibrate(fsq, m)                  -> mu, sigma, f, g, err   (each [L])
        the least-error scalar quantizer of every channel of ``m [N, L]`` at ``fsq``'s levels:
        ``m ~ mu + sigma * g * fsq(f * (m - mu) / sigma)``; err in units of ``sigma ** 2``
    allocate_bits(m, weights, budget)  -> bits [L] ints, sum(bits) == budget
        greedy optimal bit allocation (the transform coder's, ``atoken.baselines``): one bit at
        a time to the channel whose weighted quantization error falls most
    group_levels(bits, groups)         -> perm [L], levels [G][d]
        channels dealt to ``groups`` codebooks in snake order of their bits, so every group
        gets a share of the budget; ``levels = 2 ** bits`` (1: the channel is dropped)

A uniform FSQ latent (every channel at the same levels, the official So/D's 2 bits each)
spends as many bits on a weak channel as on the strongest; allocated levels spend the same
budget where the error falls most, as classical transform coding does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.plugins.bottlenecks.fsq import FSQBottleneck

__all__ = ["MAX_GROUP_BITS", "allocate_bits", "calibrate", "group_levels"]

#: The most bits one group's ids may take (ids are int32).
MAX_GROUP_BITS = 30


def calibrate(fsq: nn.Module, m: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per channel of the latent ``m [N, L]``: (mean, std, input gain f, output gain g, error)
    of the least-error scalar quantizer ``m ~ mu + sigma * g * fsq(f * (m - mu) / sigma)``,
    the input gain searched on a grid, the output gain by least squares; the error is the
    mean squared error of the standardised channel (1: the channel carries nothing)."""
    mu, sigma = m.mean(0), m.std(0).clamp_min(1e-8)
    z = (m - mu) / sigma  # [N, L] standardised
    best_err = torch.full_like(mu, float("inf"))
    best_f, best_g = torch.ones_like(mu), torch.ones_like(mu)
    for f in torch.linspace(0.05, 3.0, 60, dtype=torch.float64).tolist():
        codes, _ = fsq.quantize((z * f).float())  # [N, L] what the bottleneck will emit
        codes = codes.double()
        g = (z * codes).sum(0) / (codes**2).sum(0).clamp_min(1e-12)  # [L]
        err = ((z - g * codes) ** 2).mean(0)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_f = torch.where(better, torch.full_like(mu, f), best_f)
        best_g = torch.where(better, g, best_g)
    return mu, sigma, best_f, best_g, best_err


def _errors(m: torch.Tensor, max_bits: int) -> torch.Tensor:
    """``[L, max_bits + 1]``: each channel's squared error (in the latent's units) when it is
    quantized to ``2 ** b`` levels, ``b = 0 .. max_bits`` (0 bits: the mean, error = variance)."""
    L = m.shape[1]
    var = m.var(0)  # [L]
    errs = [var]
    for b in range(1, max_bits + 1):
        # one channel per group: L independent scalar quantizers (ids are not needed here)
        fsq = FSQBottleneck(in_dim=1, levels=[[2**b]] * L, groups=L).to(m.device)
        errs.append(calibrate(fsq, m)[4] * var)
    return torch.stack(errs, 1)  # [L, B + 1]


def allocate_bits(
    m: torch.Tensor, weights: torch.Tensor, budget: int, *, max_bits: int = 8
) -> list[int]:
    """Bits per channel of the latent ``m [N, L]``, ``sum == budget``: greedy marginal return
    on the measured errors, each weighted by ``weights [L]`` (the decoder's sensitivity to the
    channel, e.g. its input map's squared column norms).

    Raises:
        ConfigError: a budget that is negative or more than ``L * max_bits``.
    """
    L = m.shape[1]
    if not 0 <= budget <= L * max_bits:
        raise ConfigError(f"to_fsq: bits must lie in [0, {L * max_bits}] for {L} channels")
    gain = _errors(m.double(), max_bits) * weights.double()[:, None]  # [L, B + 1]
    bits = [0] * L
    for _ in range(budget):
        drop = [
            float(gain[i, bits[i]] - gain[i, bits[i] + 1]) if bits[i] < max_bits else -1.0
            for i in range(L)
        ]
        best = max(range(L), key=drop.__getitem__)
        bits[best] += 1
    return bits


def group_levels(bits: Sequence[int], groups: int) -> tuple[list[int], list[list[int]]]:
    """Deal the channels to ``groups`` codebooks of ``L / groups`` channels each, in snake
    order of their bits (most first): ``perm[g * d + j]`` is the latent channel that becomes
    channel ``j`` of group ``g``, whose levels are ``levels[g][j] = 2 ** bits``.

    Raises:
        ConfigError: groups that do not tile the channels, or a group over
            :data:`MAX_GROUP_BITS` bits (more groups, or a smaller budget).
    """
    L = len(bits)
    if groups < 1 or L % groups:
        raise ConfigError(f"to_fsq: {groups} groups do not tile the {L} latent channels")
    order = sorted(range(L), key=lambda i: (-bits[i], i))  # channels, most bits first
    members: list[list[int]] = [[] for _ in range(groups)]
    for rank, channel in enumerate(order):
        row, col = divmod(rank, groups)
        members[col if row % 2 == 0 else groups - 1 - col].append(channel)
    heavy = [sum(bits[c] for c in group) for group in members]
    if max(heavy) > MAX_GROUP_BITS:
        raise ConfigError(
            f"to_fsq: a group of {max(heavy)} bits is over {MAX_GROUP_BITS} (ids are int32): "
            "use more groups or fewer bits"
        )
    perm = [c for group in members for c in group]  # [L]
    levels = [[2 ** bits[c] for c in group] for group in members]  # [G][d]
    return perm, levels
