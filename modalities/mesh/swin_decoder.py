"""The official AToken Gaussian decoder's network: voxel features -> K 3D Gaussians per voxel,
through a sparse transformer attending inside 3D windows, shifted on every other block.

It reproduces ``SLatGaussianDecoder`` (apple/ml-atoken ``model/decoder_gs.py``, checkpoint
``3d_decode_gs.pt``), which reuses TRELLIS' structured-latent Gaussian decoder.

Shapes:
    N  voxels of all samples, rows in any order (the output keeps the order)
    F  input features per voxel (768: the first 768 values of the AToken decoder's patch)
    C  width (768 official), H heads (12), D = C / H (64), M the MLP width (3072)
    K  Gaussians per voxel (32); P = 14 K raw parameters per voxel (448)
    W  windows of one partition; seqlens int64 [W]
    feats [N, F]; coords int32 [N, 4] = (sample, x, y, z) in an R^3 grid (R = 64)

Forward::

    h = in_proj(feats) + sinusoid(x, y, z)                         [N, C]
    block i: rows gathered window by window (windows of side w, shifted by w // 2 on odd
             blocks), pre-norm block (RMSNorm, attention, GELU-tanh MLP) on the window
             seqlens, rows put back                                [N, C]
    raw = out_proj(layer_norm(h))   (no affine, epsilon 1e-5)      [N, P]

The raw layout per voxel is the official one (:mod:`.gaussians`): xyz [K, 3] | features_dc
[K, 3] | scaling [K, 3] | rotation [K, 4] | opacity [K]. :meth:`SwinGaussianDecoder.to_gaussians`
activates it into one :class:`~.gaussians.GaussianSet` per sample.

Attention. With ``softcap=None`` every window goes through the injected packed backend
(``attention_fn(q, k, v, seqlens)``: torch SDPA on the CPU, xformers on CUDA), as the official
code does with xformers. The official default backend, flash-attn, caps the logits of a
partition at ``softcap * tanh(logits / softcap)`` with ``softcap = 30`` unless every window of
that partition holds exactly ``window`` tokens (then it calls the uncapped packed kernel); with
a ``softcap`` this module does the same, the capped windows through
:func:`softcapped_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.attention import AttentionFn, attention_sdpa
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.transformer import Block
from atoken.modalities.mesh.gaussians import GaussianSet, activate, offset_perturbation

__all__ = [
    "SwinGaussianDecoder",
    "WindowAttention",
    "sinusoidal_position",
    "softcapped_attention",
    "window_partition",
]

#: Logits per chunk of :func:`softcapped_attention` (about 64 MB in float32).
_CHUNK = 1 << 24


def sinusoidal_position(xyz: torch.Tensor, width: int) -> torch.Tensor:
    """The absolute sinusoidal position ``[N, width]`` of voxels ``xyz [N, 3]``.

    Per axis, ``f = width // 6`` frequencies ``10000 ** (-i / f)``; the channels are x, y, z
    one after the other, each ``sin(p * freqs) | cos(p * freqs)``, then zeros up to ``width``
    (the official ``AbsolutePositionEmbedder``, computed in float32 as it is).
    """
    N = xyz.shape[0]
    f = width // 3 // 2
    freqs = 1.0 / (10000 ** (torch.arange(f, dtype=torch.float32, device=xyz.device) / f))  # [f]
    angles = torch.outer(xyz.reshape(-1).float(), freqs)  # [3N, f]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1).reshape(N, 6 * f)  # [N, 6f]
    if 6 * f < width:
        emb = torch.cat([emb, emb.new_zeros(N, width - 6 * f)], dim=-1)  # [N, width]
    return emb


def window_partition(
    coords: torch.Tensor, window: int, shift: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The voxels of ``coords [N, 4]`` (sample, x, y, z) grouped by window.

    A voxel's window is ``(sample, (x + shift) // window, (y + shift) // window,
    (z + shift) // window)``; a shift s moves the window borders to ``k * window - s``.

    Returns:
        ``order`` int64 [N]: the rows window after window (windows in (sample, x, y, z) order,
        rows of a window in input order), and ``seqlens`` int64 [W]: the rows per window.
    """
    cells = coords.long().clone()  # [N, 4]
    cells[:, 1:] = torch.div(cells[:, 1:] + shift, window, rounding_mode="floor")
    if cells.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long, device=coords.device)
        return empty, empty
    _, inverse, counts = torch.unique(cells, dim=0, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)  # [N]
    return order, counts


def softcapped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: torch.Tensor, *, softcap: float
) -> torch.Tensor:
    """Packed attention with capped logits: per sample, ``softmax(c * tanh(q k^T / (sqrt(D) *
    c))) v`` with ``c = softcap`` (flash-attn's ``softcap``), ``q, k, v [N, H, D]`` ->
    ``[N, H, D]``. Samples of equal length are computed together, in chunks."""
    N, H, D = q.shape
    out = q.new_empty(N, H, D)
    lengths = [int(n) for n in seqlens.tolist()]
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    groups: dict[int, list[int]] = {}
    for b, n in enumerate(lengths):
        if n:
            groups.setdefault(n, []).append(b)
    scale = 1.0 / math.sqrt(D)
    for L, members in groups.items():
        step = max(1, _CHUNK // (H * L * L))
        for first in range(0, len(members), step):
            chunk = members[first : first + step]
            g = len(chunk)
            rows = torch.cat([torch.arange(starts[b], starts[b] + L) for b in chunk])  # [g*L]
            rows = rows.to(q.device)
            qg, kg, vg = (t[rows].view(g, L, H, D).transpose(1, 2) for t in (q, k, v))
            logits = (qg @ kg.transpose(-1, -2)) * scale  # [g, H, L, L]
            logits = softcap * torch.tanh(logits / softcap)
            og = torch.softmax(logits, dim=-1) @ vg  # [g, H, L, D]
            out[rows] = og.transpose(1, 2).reshape(g * L, H, D)
    return out


class WindowAttention:
    """The attention of one window partition: ``fn(q, k, v, seqlens)`` with ``seqlens`` the
    window lengths (see the module docstring for when the logits are capped).

    Args:
        backend: the packed backend for uncapped windows.
        window: the window side (the official rule leaves a partition uncapped when every
            window holds exactly this many tokens).
        softcap: the cap, or None for none.
    """

    def __init__(self, backend: AttentionFn, window: int, softcap: float | None) -> None:
        self.backend, self.window, self.softcap = backend, window, softcap

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seqlens: torch.Tensor
    ) -> torch.Tensor:
        """``q, k, v [N, H, D]``, ``seqlens [W]`` -> ``[N, H, D]``."""
        if self.softcap is None or bool((seqlens == self.window).all()):
            return self.backend(q, k, v, seqlens)
        return softcapped_attention(q, k, v, seqlens, softcap=self.softcap)


class SwinGaussianDecoder(nn.Module):
    """Voxel features -> raw Gaussian parameters (see the module docstring).

    Parameters: ``in_proj`` (no bias), ``blocks.{i}`` (:class:`~atoken.core.transformer.Block`:
    RMSNorm epsilon 1e-6, no biases, GELU-tanh), ``out_proj`` (with bias) and the persistent
    buffer ``offset_perturbation [K, 3]``.

    Args:
        in_channels: F.
        width, depth, heads, mlp_hidden: C, blocks, H, M.
        window: the window side (8); odd blocks shift the windows by ``window // 2``.
        gaussians_per_voxel: K.
        resolution: R, the voxel grid side the coordinates live in.
        qk_norm: per-head RMS qk-norm with a gain per head (off in the official decoder).
        softcap: cap the attention logits as the official flash-attn path (30.0), or None.
        scale_init, scale_floor: the official 0.004 and 9e-4, absolute at any resolution.
        attention_fn: the packed backend for uncapped windows.

    Raises:
        ConfigError: a width that is not a multiple of ``heads``, or a size below 1.
    """

    def __init__(
        self,
        *,
        in_channels: int = 768,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_hidden: int = 3072,
        window: int = 8,
        gaussians_per_voxel: int = 32,
        resolution: int = 64,
        qk_norm: bool = False,
        softcap: float | None = 30.0,
        scale_init: float = 0.004,
        scale_floor: float = 9e-4,
        attention_fn: AttentionFn = attention_sdpa,
    ) -> None:
        super().__init__()
        sizes = {
            "in_channels": in_channels,
            "width": width,
            "depth": depth,
            "heads": heads,
            "mlp_hidden": mlp_hidden,
            "window": window,
            "gaussians_per_voxel": gaussians_per_voxel,
            "resolution": resolution,
        }
        bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int)}
        bad.update({k: v for k, v in sizes.items() if k not in bad and v < 1})
        if bad:
            raise ConfigError(f"the Gaussian decoder's sizes must be ints >= 1, got {bad}")
        if width % heads:
            raise ConfigError(f"the Gaussian decoder's width {width} is not a multiple of {heads}")
        if softcap is not None and not softcap > 0:
            raise ConfigError(f"softcap must be > 0 or None, got {softcap}")
        self.in_channels, self.width, self.window = in_channels, width, window
        self.depth, self.heads, self.mlp_hidden, self.qk_norm = depth, heads, mlp_hidden, qk_norm
        self.gaussians_per_voxel, self.resolution = gaussians_per_voxel, resolution
        self.softcap, self.scale_init, self.scale_floor = softcap, scale_init, scale_floor
        self.in_proj = nn.Linear(in_channels, width, bias=False)
        self.blocks = nn.ModuleList(
            Block(
                width,
                heads,
                mlp_hidden,
                norm="rmsnorm",
                eps=1e-6,
                bias=False,
                qk_norm=qk_norm,
                qk_norm_per_head=qk_norm,
                act="gelu_tanh",
            )
            for _ in range(depth)
        )
        self.out_proj = nn.Linear(width, 14 * gaussians_per_voxel, bias=True)
        self.register_buffer(
            "offset_perturbation", offset_perturbation(gaussians_per_voxel), persistent=True
        )
        self.set_attention_fn(attention_fn)

    def set_attention_fn(self, attention_fn: AttentionFn) -> None:
        """Use the packed backend ``attention_fn`` for the uncapped windows from now on."""
        self.attention_fn = attention_fn
        for block in self.blocks:
            block.attn.attention_fn = WindowAttention(attention_fn, self.window, self.softcap)

    def _check(self, feats: torch.Tensor, coords: torch.Tensor) -> None:
        if feats.ndim != 2 or feats.shape[1] != self.in_channels:
            raise ModalityInputError(
                f"feats must be [N, {self.in_channels}], got {tuple(feats.shape)}"
            )
        if coords.shape != (feats.shape[0], 4) or coords.is_floating_point():
            raise ModalityInputError(
                f"coords must be integer [N, 4] = (sample, x, y, z) with N = {feats.shape[0]}, "
                f"got {coords.dtype} {tuple(coords.shape)}"
            )
        if coords.numel() and bool((coords < 0).any()):
            raise ModalityInputError("coords must be non-negative (sample, x, y, z)")

    def forward(self, feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``feats [N, F]``, ``coords int [N, 4]`` -> raw parameters ``[N, 14 K]``, rows in the
        input order.

        Raises:
            ModalityInputError: wrong shapes, float or negative coordinates.
        """
        self._check(feats, coords)
        dtype = self.in_proj.weight.dtype
        h = self.in_proj(feats.to(dtype))  # [N, C]
        h = h + sinusoidal_position(coords[:, 1:], self.width).to(h.dtype)  # [N, C]
        partitions = [
            window_partition(coords, self.window, shift) for shift in (0, self.window // 2)
        ]
        for i, block in enumerate(self.blocks):
            order, seqlens = partitions[i % 2]  # [N], [W]
            h = h.index_copy(0, order, block(h[order], seqlens))  # [N, C], rows put back
        h = F.layer_norm(h.float(), (self.width,)).to(dtype)  # [N, C], eps 1e-5, no affine
        return self.out_proj(h)  # [N, 14 K]

    def to_gaussians(self, raw: torch.Tensor, coords: torch.Tensor) -> list[GaussianSet]:
        """Raw ``[N, 14 K]`` of voxels ``coords [N, 4]`` -> one :class:`GaussianSet` per
        sample ``0 .. max(sample)``: the sample's rows in input order, K Gaussians each, in
        the unit cube ``[-0.5, 0.5]^3`` of the R^3 grid, with the official activations
        (absolute ``scale_init`` and ``scale_floor``; rotation x 0.1; see :mod:`.gaussians`).

        Raises:
            ModalityInputError: ``raw`` not ``[N, 14 K]``.
        """
        if raw.ndim != 2 or raw.shape != (coords.shape[0], 14 * self.gaussians_per_voxel):
            raise ModalityInputError(
                f"raw must be [{coords.shape[0]}, {14 * self.gaussians_per_voxel}], "
                f"got {tuple(raw.shape)}"
            )
        samples = int(coords[:, 0].max()) + 1 if coords.shape[0] else 0
        out = []
        for b in range(samples):
            rows = (coords[:, 0] == b).nonzero().squeeze(1)  # [n_b]
            out.append(
                activate(
                    raw[rows],
                    coords[rows, 1:],
                    self.resolution,
                    self.offset_perturbation,
                    scale_init=self.scale_init,
                    scale_floor=self.scale_floor,
                )
            )
        return out

    def decode(self, feats: torch.Tensor, coords: torch.Tensor) -> list[GaussianSet]:
        """``to_gaussians(forward(feats, coords), coords)``."""
        return self.to_gaussians(self(feats, coords), coords)
