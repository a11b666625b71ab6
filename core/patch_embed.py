"""Token input layers: the 4D patch embedding and the learned 2D position table.

Shapes:
    B  samples, N tokens of all samples packed, C width
    P  values per token, P = pt * p * p * c laid out as (pt, ph, pw, c): temporal slot
       ``s`` holds columns ``s * p * p * c`` to ``(s + 1) * p * p * c``; images fill slot 0
    coords int32 [N, 4] = (t, x, y, z), x the column and y the row of the token grid

:class:`PatchEmbed4D` is one linear map ``[N, P] -> [N, C]``. Its temporal slots 1..pt-1 start
at zero, so an image model inflated with :meth:`PatchEmbed4D.from_2d` gives the same output
whatever the other slots hold, and video learns them from there. When every token's slots
1..pt-1 are zero (a batch of images), only slot 0 is multiplied: the same result for a quarter
of the work.

:class:`PositionTable2D` is SigLIP2's learned ``rows x cols`` table, resized (bilinear, with
antialias) to each sample's grid and read at each token's (y, x). A sample's grid is the
extent of its coordinates (``max + 1`` per axis) unless given. At the native size the resize is
skipped, so the table is read exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import ConfigError, LatentValidationError

__all__ = ["PatchEmbed4D", "PositionTable2D", "inflate_2d_patch_weight"]


def inflate_2d_patch_weight(weight: torch.Tensor, temporal_patch: int) -> torch.Tensor:
    """``[C, p, p, c]`` or ``[C, p*p*c]`` in (ph, pw, c) order -> ``[C, pt*p*p*c]`` with the
    2D weight in temporal slot 0 and zeros in the other slots."""
    C = weight.shape[0]
    flat = weight.reshape(C, -1)  # [C, p*p*c]
    out = flat.new_zeros(C, temporal_patch, flat.shape[1])  # [C, pt, p*p*c]
    out[:, 0] = flat
    return out.reshape(C, -1)  # [C, pt*p*p*c]


class PatchEmbed4D(nn.Module):
    """Linear patch embedding of ``t x p x p x c`` values (default 4 x 16 x 16 x 3) to the width.

    Args:
        width: C, the output width.
        patch_size: p.
        temporal_patch: pt.
        in_channels: c.
        bias: a bias on the projection.
        zero_temporal: initialise temporal slots 1..pt-1 to zero (slot 0 gets the usual
            initialisation of a 2D patch embedding).
    """

    def __init__(
        self,
        width: int,
        *,
        patch_size: int = 16,
        temporal_patch: int = 4,
        in_channels: int = 3,
        bias: bool = True,
        zero_temporal: bool = True,
    ) -> None:
        super().__init__()
        self.width = width
        self.patch_size = patch_size
        self.temporal_patch = temporal_patch
        self.in_channels = in_channels
        self.patch_dim = temporal_patch * patch_size * patch_size * in_channels
        self.proj = nn.Linear(self.patch_dim, width, bias=bias)
        if zero_temporal:
            slot = nn.Linear(patch_size * patch_size * in_channels, width, bias=bias)
            with torch.no_grad():
                self.proj.weight.copy_(inflate_2d_patch_weight(slot.weight, temporal_patch))
                if bias:
                    self.proj.bias.copy_(slot.bias)

    def extra_repr(self) -> str:
        return (
            f"patch=({self.temporal_patch}, {self.patch_size}, {self.patch_size}, "
            f"{self.in_channels}) -> width={self.width}"
        )

    @classmethod
    def from_2d(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        temporal_patch: int = 4,
        in_channels: int = 3,
    ) -> PatchEmbed4D:
        """A patch embedding whose slot 0 holds a 2D patch weight and whose other slots are 0.

        Args:
            weight: ``[C, p, p, c]`` in (ph, pw, c) order (permute a conv's ``[C, c, p, p]``
                with ``weight.permute(0, 2, 3, 1)`` first).
            bias: ``[C]`` or None (no bias).
            temporal_patch: pt.
            in_channels: c.

        Raises:
            ConfigError: when the weight is not ``[C, p, p, c]`` with a square patch.
        """
        if weight.ndim != 4 or weight.shape[1] != weight.shape[2] or weight.shape[3] != in_channels:
            raise ConfigError(
                f"from_2d: weight must be [C, p, p, {in_channels}] in (ph, pw, c) order, "
                f"got {tuple(weight.shape)}"
            )
        C, p = weight.shape[0], weight.shape[1]
        module = cls(
            C,
            patch_size=p,
            temporal_patch=temporal_patch,
            in_channels=in_channels,
            bias=bias is not None,
            zero_temporal=False,
        )
        module.load_2d(weight, bias)
        return module.to(weight.device, weight.dtype)

    @torch.no_grad()
    def load_2d(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Copy a 2D patch weight ``[C, p, p, c]`` into slot 0 and zero the other slots.

        Raises:
            ConfigError: when the shapes do not match this module.
        """
        expected = (self.width, self.patch_size, self.patch_size, self.in_channels)
        if tuple(weight.shape) != expected:
            raise ConfigError(f"load_2d: weight must be {list(expected)}, got {list(weight.shape)}")
        self.proj.weight.copy_(inflate_2d_patch_weight(weight, self.temporal_patch))
        if (bias is None) != (self.proj.bias is None):
            raise ConfigError("load_2d: bias given for a bias-free embedding or missing")
        if bias is not None:
            self.proj.bias.copy_(bias)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """``values [N, P]`` -> ``[N, C]``.

        Raises:
            LatentValidationError: when the values are not ``[N, P]``.
        """
        if values.ndim != 2 or values.shape[1] != self.patch_dim:
            raise LatentValidationError(
                "feats",
                f"patch embedding expects [N, {self.patch_dim}] values "
                f"({self.temporal_patch}x{self.patch_size}x{self.patch_size}x{self.in_channels}), "
                f"got {tuple(values.shape)}",
            )
        slot = self.patch_dim // self.temporal_patch  # p*p*c values per temporal slot
        if self.temporal_patch > 1 and not bool(values[:, slot:].any()):
            # Images fill slot 0 only: skip the zero slots (exact, 1/pt of the work).
            return F.linear(values[:, :slot], self.proj.weight[:, :slot], self.proj.bias)
        return self.proj(values)


class PositionTable2D(nn.Module):
    """A learned ``rows x cols`` position table, resized to each sample's grid.

    Args:
        width: C.
        grid: the native ``(rows, cols)`` (SigLIP2: 16 x 16 at 256 px, 14 x 14 at 224 px).
    """

    def __init__(self, width: int, grid: Sequence[int] = (16, 16)) -> None:
        super().__init__()
        rows, cols = (int(g) for g in grid)
        self.grid = (rows, cols)
        self.weight = nn.Parameter(torch.empty(rows, cols, width))  # [rows, cols, C]
        nn.init.trunc_normal_(self.weight, std=0.02)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, width={self.weight.shape[-1]}"

    def resized(self, rows: int, cols: int) -> torch.Tensor:
        """The table at ``rows x cols``: ``[rows, cols, C]`` (bilinear, antialias)."""
        if (rows, cols) == self.grid:
            return self.weight
        table = self.weight.permute(2, 0, 1)[None].float()  # [1, C, rows0, cols0]
        table = F.interpolate(
            table, size=(rows, cols), mode="bilinear", antialias=True, align_corners=False
        )  # [1, C, rows, cols]
        return table[0].permute(1, 2, 0).to(self.weight.dtype)  # [rows, cols, C]

    def forward(
        self,
        coords: torch.Tensor,
        seqlens: torch.Tensor,
        grids: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """Position vectors ``[N, C]`` for ``coords int32 [N, 4]`` of samples ``seqlens [B]``.

        Args:
            grids: each sample's ``(rows, cols)``; default: its coordinate extent.

        Raises:
            LatentValidationError: when a coordinate lies outside a given grid.
        """
        N = coords.shape[0]
        C = self.weight.shape[-1]
        B = int(seqlens.shape[0])
        x = coords[:, 1].long()  # [N] column
        y = coords[:, 2].long()  # [N] row
        lengths = seqlens.to(coords.device)
        if grids is None:
            extent = torch.segment_reduce(
                coords[:, 1:3].float() + 1, "max", lengths=lengths, axis=0, unsafe=True
            )  # [B, 2] = (cols, rows); empty samples give -inf
            extent = torch.nan_to_num(extent, neginf=0.0).long()
            sizes = [(r, c) for c, r in extent.tolist()]
        else:
            sizes = [(int(r), int(c)) for r, c in grids]
            if len(sizes) != B:
                raise LatentValidationError("meta", f"{len(sizes)} grids for {B} samples")
        out = self.weight.new_empty(N, C)  # [N, C]
        by_size: dict[tuple[int, int], list[int]] = {}
        for b, size in enumerate(sizes):
            by_size.setdefault(size, []).append(b)
        for (rows, cols), members in by_size.items():
            if rows == 0 or cols == 0:
                continue  # only empty samples have a zero extent
            if len(members) == B:
                idx = None
            else:
                member = torch.zeros(B, dtype=torch.bool, device=coords.device)
                member[members] = True
                mask = member.repeat_interleave(lengths, output_size=N)  # [N]
                idx = torch.nonzero(mask).flatten()  # [n] tokens of these samples
            xs, ys = (x, y) if idx is None else (x[idx], y[idx])
            if (
                grids is not None
                and xs.numel()
                and (int(xs.max()) >= cols or int(ys.max()) >= rows)
            ):
                raise LatentValidationError(
                    "coords", f"a coordinate lies outside its grid {rows}x{cols}"
                )
            table = self.resized(rows, cols).reshape(rows * cols, C)  # [rows*cols, C]
            vecs = table[ys * cols + xs]  # [n, C]
            if idx is None:
                out = vecs
            else:
                out[idx] = vecs
        return out
