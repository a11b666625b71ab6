"""4D rotary position embedding (RoPE) over (t, x, y, z) token coordinates.

Shapes:
    N  tokens of all samples packed together
    H  attention heads
    D  head dimension, split into four equal quarters of D / 4 channels, one per axis
    P  rotation pairs per axis, P = D / 8
    coords int32 [N, 4] = (t, x, y, z)

Each quarter of a head rotates its P channel pairs by ``angle = coord[axis] * freq[axis, i]``.
Because a rotation by ``a`` followed by the transpose of a rotation by ``b`` is a rotation by
``a - b``, the attention logit ``<rope(q, c_q), rope(k, c_k)>`` depends on positions only through
``c_q - c_k``: translating a whole sample leaves its attention unchanged.

Two knobs describe every variant in use:

* ``pair_layout``: which channels form a pair inside a quarter.
  ``"interleaved"``: consecutive channels ``(2i, 2i + 1)`` (the official AToken release);
  ``"half"``: channel ``i`` with ``i + P`` (the rotate-half layout of GPT-NeoX and Llama).
* ``frequencies``: the frequency schedule of one axis.
  ``"atoken"``: ``theta ** (-i / D)`` for ``i = 0..P-1``, identical for every axis. This is what
  the official release computes (only the high-frequency end: for D = 72 the lowest frequency
  is about 0.36 rad/token); keep it for checkpoint parity.
  ``"axial"``: ``theta ** (-2i / (D / 4))``, the standard schedule applied to each quarter as if
  it were a head of its own (covers wavelengths from 2π up to about ``theta`` tokens).

* ``axis_order``: which coordinate column feeds each quarter. The default ``(0, 1, 2, 3)`` is
  (t, x, y, z); the official release concatenates (t, h, w, z), i.e. (t, y, x, z) in atoken's
  coordinates, which is ``axis_order=(0, 2, 1, 3)`` (settled by running the official code
  beside a converted checkpoint: docs/official-weights.md).

``Rope4D(D)`` defaults to the official pairs and frequencies; ``Rope4D(D, pair_layout="half",
frequencies="axial")`` is the standard rotate-half one. Angles, cosines and the rotation itself
are computed in float32 whatever the input dtype (float64 input stays float64), and the result
is cast back to the input dtype.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from atoken.core.errors import ConfigError

__all__ = ["PAIR_LAYOUTS", "ROPE_FREQUENCIES", "Rope4D", "RopeTables"]

PAIR_LAYOUTS: tuple[str, ...] = ("interleaved", "half")
ROPE_FREQUENCIES: tuple[str, ...] = ("atoken", "axial")
_AXES = 4

#: Precomputed unit rotations, complex64 ``[N, 1, D / 2]``; compute once per forward.
RopeTables = torch.Tensor


def _complex_viewable(pairs: torch.Tensor) -> bool:
    """Whether ``torch.view_as_complex`` accepts ``pairs [..., 2]`` without a copy."""
    return (
        pairs.stride(-1) == 1
        and pairs.storage_offset() % 2 == 0
        and all(st % 2 == 0 for st in pairs.stride()[:-1])
    )


def _axis_frequencies(head_dim: int, theta: float, frequencies: str) -> torch.Tensor:
    """float64 ``[4, P]``: the rotation frequency of every pair of every axis."""
    pairs = head_dim // (2 * _AXES)  # P
    i = torch.arange(pairs, dtype=torch.float64)  # [P]
    if frequencies == "atoken":
        freq = theta ** (-i / head_dim)  # [P], the official (non-standard) schedule
    else:
        quarter = head_dim // _AXES
        freq = theta ** (-2.0 * i / quarter)  # [P]
    return freq[None].expand(_AXES, pairs).clone()  # [4, P]


class Rope4D(nn.Module):
    """Rotary position embedding over 4D coordinates: ``rope(x [N, H, D], coords [N, 4])``.

    Args:
        head_dim: D, a multiple of 8 (four quarters of whole pairs).
        theta: the base of the frequency schedule (10000).
        pair_layout: ``"interleaved"`` (official) or ``"half"`` (rotate-half).
        frequencies: ``"atoken"`` (official) or ``"axial"`` (standard per quarter).
        axis_order: the coordinate column (0 = t, 1 = x, 2 = y, 3 = z) of each quarter, a
            permutation of ``(0, 1, 2, 3)``.

    Raises:
        ConfigError: for a head dimension that is not a positive multiple of 8, a non-positive
            theta, an unknown layout or schedule or an axis order that is not a permutation.
    """

    inv_freq: torch.Tensor

    def __init__(
        self,
        head_dim: int,
        *,
        theta: float = 10000.0,
        pair_layout: Literal["interleaved", "half"] = "interleaved",
        frequencies: Literal["atoken", "axial"] = "atoken",
        axis_order: tuple[int, int, int, int] = (0, 1, 2, 3),
    ) -> None:
        super().__init__()
        if not isinstance(head_dim, int) or head_dim < 8 or head_dim % 8:
            raise ConfigError(
                f"Rope4D: head_dim must be a positive multiple of 8 (four quarters of whole "
                f"rotation pairs), got {head_dim!r}"
            )
        if not (isinstance(theta, (int, float)) and math.isfinite(theta) and theta > 1):
            raise ConfigError(f"Rope4D: theta must be a finite number > 1, got {theta!r}")
        if pair_layout not in PAIR_LAYOUTS:
            raise ConfigError(
                f"Rope4D: pair_layout must be one of {PAIR_LAYOUTS}, got {pair_layout!r}"
            )
        if frequencies not in ROPE_FREQUENCIES:
            raise ConfigError(
                f"Rope4D: frequencies must be one of {ROPE_FREQUENCIES}, got {frequencies!r}"
            )
        order = tuple(axis_order)
        if sorted(order) != list(range(_AXES)):
            raise ConfigError(
                f"Rope4D: axis_order must be a permutation of 0..3, got {axis_order!r}"
            )
        self.head_dim = head_dim
        self.axis_order = order
        self.theta = float(theta)
        self.pair_layout = pair_layout
        self.frequencies = frequencies
        freq = _axis_frequencies(head_dim, self.theta, frequencies)  # [4, P]
        self.register_buffer("inv_freq", freq.to(torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, theta={self.theta:g}, pair_layout={self.pair_layout!r}, "
            f"frequencies={self.frequencies!r}, axis_order={self.axis_order}"
        )

    def tables(self, coords: torch.Tensor) -> RopeTables:
        """Unit complex rotations ``exp(i * angle)``, complex64 ``[N, 1, D / 2]``, for
        ``coords [N, 4]``; compute once per forward and reuse in every layer.

        Entry ``q * P + i`` rotates pair ``i`` of quarter ``q``, which reads the coordinate
        column ``axis_order[q]``.
        """
        N = coords.shape[0]
        if self.axis_order != (0, 1, 2, 3):
            coords = coords[:, list(self.axis_order)]  # [N, 4] in quarter order
        # Angles in float64 then float32: large coordinates keep their exact phase.
        freq = self.inv_freq.to(device=coords.device, dtype=torch.float64)  # [4, P]
        angles = coords.to(torch.float64)[:, :, None] * freq  # [N, 4, P]
        angles = angles.reshape(N, 1, self.head_dim // 2)  # [N, 1, D/2]
        return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)

    def apply(self, x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
        """Rotate ``x [N, ..., D]`` (e.g. ``[N, H, D]``, or q and k stacked as
        ``[N, 2, H, D]``) with precomputed :meth:`tables`; same dtype as ``x``.

        Each pair is read as one complex number and multiplied by its unit rotation: a single
        kernel for the official interleaved layout (the pairs are already adjacent).
        """
        N, D = x.shape[0], x.shape[-1]
        P = D // (2 * _AXES)
        compute = torch.promote_types(x.dtype, torch.float32)  # fp32, or fp64 for fp64 input
        xf = x.to(compute)
        if self.pair_layout == "interleaved":
            pairs = xf.unflatten(-1, (D // 2, 2))  # [N, ..., D/2, 2]: pairs side by side
        else:
            halves = xf.unflatten(-1, (_AXES, 2, P))  # [N, ..., 4, 2, P]: (first, second half)
            pairs = halves.transpose(-1, -2).flatten(-3, -2)  # [N, ..., D/2, 2]
        if not _complex_viewable(pairs):
            pairs = pairs.contiguous()
        table = tables.to(torch.complex128 if compute == torch.float64 else torch.complex64)
        table = table.reshape((N,) + (1,) * (x.ndim - 2) + (D // 2,))  # broadcast over heads
        out = torch.view_as_real(torch.view_as_complex(pairs) * table)  # [N, ..., D/2, 2]
        if self.pair_layout == "half":
            out = out.unflatten(-2, (_AXES, P)).transpose(-1, -2)  # [N, ..., 4, 2, P]
        return out.reshape(x.shape).to(x.dtype)

    def forward(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Rotate ``x [N, H, D]`` by the positions ``coords int32 [N, 4]``; same dtype as ``x``.

        Raises:
            ConfigError: when shapes disagree with the head dimension or with each other.
        """
        if x.ndim != 3 or x.shape[-1] != self.head_dim:
            raise ConfigError(f"Rope4D: x must be [N, H, {self.head_dim}], got {tuple(x.shape)}")
        if coords.ndim != 2 or coords.shape != (x.shape[0], _AXES):
            raise ConfigError(
                f"Rope4D: coords must be [{x.shape[0]}, 4], got {tuple(coords.shape)}"
            )
        return self.apply(x, self.tables(coords))
