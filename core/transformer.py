"""The transformer over packed samples: attention, MLP, block, stack (in that order).

Shapes:
    B  samples
    N  tokens of all samples packed back to back (nothing padded)
    C  width (channels per token)
    H  heads, D = C / H head dimension
    seqlens int64 [B]; rope tables (cos, sin) float32 [N, 1, D / 2] (see :mod:`atoken.core.rope`)

Every block is pre-norm: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``. The attention
function is injected (``attention_fn(q, k, v, seqlens)``, see :mod:`atoken.core.attention`), so
the core never chooses a backend by name; :meth:`Transformer.set_attention_fn` swaps it on a
built model. qk-norm (per head, over D) is applied before RoPE, as in the official decoder.

With a :class:`~atoken.core.kv_cache.KVCache` (``forward(x, seqlens, coords, cache=cache)``, one
sample), every layer's queries also attend to the keys and values the cache holds: M held keys
go in front of the sample's n keys (``kv_seqlens = [M + n]``) and the same backend is called
through :func:`~atoken.core.attention.call_attention`. Without a cache nothing of that runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from atoken.core.attention import AttentionFn, attention_sdpa, call_attention
from atoken.core.config import BackboneConfig
from atoken.core.errors import ConfigError
from atoken.core.rope import Rope4D, RopeTables

if TYPE_CHECKING:
    from atoken.core.kv_cache import KVCache

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "Attention",
    "Block",
    "HeadRMSNorm",
    "Mlp",
    "RMSNorm",
    "Transformer",
    "make_norm",
]

NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")
ACTIVATIONS: tuple[str, ...] = ("gelu_tanh", "gelu")


def make_norm(
    kind: Literal["layernorm", "rmsnorm"], dim: int, *, eps: float = 1e-6, bias: bool = True
) -> nn.Module:
    """A LayerNorm (with or without bias) or an RMSNorm over the last ``dim`` channels.

    Raises:
        ConfigError: for an unknown kind.
    """
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ConfigError(f"norm must be one of {NORMS}, got {kind!r}")


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameters and state dict) whose gain takes the input's dtype:
    under bf16 autocast a bf16 input meets the fp32 gain, which torch's fused kernel refuses
    (it falls back to the composite one and warns once per process); cast, the fused kernel
    runs. In fp32 nothing is cast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight is not None and weight.dtype != x.dtype:
            weight = weight.to(x.dtype)  # [D]
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


class HeadRMSNorm(nn.Module):
    """Per-head RMS normalisation with a gain per head and channel, ``x [..., H, D]``.

    ``y = F.normalize(x, dim=-1) * weight * sqrt(D)`` in float32, cast back: an RMSNorm
    without epsilon inside the root (``F.normalize`` clamps the norm at 1e-12 instead), with
    ``weight [H, D]`` starting at one. This is the official release's qk-norm
    (``SparseMultiHeadRMSNorm``, its ``gamma``).
    """

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.scale = math.sqrt(head_dim)
        self.weight = nn.Parameter(torch.ones(heads, head_dim))  # [H, D]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., H, D]`` -> same shape and dtype."""
        y = F.normalize(x.float(), dim=-1) * self.weight.float() * self.scale  # [..., H, D]
        return y.to(x.dtype)


def _qk_norm(
    qk_norm: bool, per_head: bool, norm: str, heads: int, head_dim: int, eps: float
) -> nn.Module:
    if not qk_norm:
        return nn.Identity()
    return HeadRMSNorm(heads, head_dim) if per_head else make_norm(norm, head_dim, eps=eps)


def _make_act(kind: str) -> nn.Module:
    if kind == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if kind == "gelu":
        return nn.GELU()
    raise ConfigError(f"act must be one of {ACTIVATIONS}, got {kind!r}")


class Attention(nn.Module):
    """Multi-head self-attention over packed samples with a fused qkv projection.

    Args:
        dim: C, the width.
        heads: H; ``dim`` must be a multiple of it.
        qkv_bias, proj_bias: biases of the qkv and output projections.
        qk_norm: normalise q and k per head (over D) with ``norm`` before RoPE.
        qk_norm_per_head: use :class:`HeadRMSNorm` (a gain per head, the official form).
        norm, eps: the qk-norm kind and epsilon.
        attention_fn: the packed attention backend ``fn(q, k, v, seqlens)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        qk_norm_per_head: bool = False,
        norm: Literal["layernorm", "rmsnorm"] = "layernorm",
        eps: float = 1e-6,
        attention_fn: AttentionFn = attention_sdpa,
    ) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ConfigError(f"width {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.qk_norm = qk_norm
        self.q_norm = _qk_norm(qk_norm, qk_norm_per_head, norm, heads, self.head_dim, eps)
        self.k_norm = _qk_norm(qk_norm, qk_norm_per_head, norm, heads, self.head_dim, eps)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.attention_fn = attention_fn

    def forward(
        self,
        x: torch.Tensor,
        seqlens: torch.Tensor,
        rope: Rope4D | None = None,
        rope_tables: RopeTables | None = None,
        *,
        cache: KVCache | None = None,
        layer: int = 0,
        key_tables: RopeTables | None = None,
    ) -> torch.Tensor:
        """``x [N, C]`` -> ``[N, C]``; RoPE is applied when both ``rope`` and tables are given.

        With ``cache`` (one sample), layer ``layer``'s held K and V go in front of this
        sample's and ``key_tables`` (``[M + N, 1, D / 2]``) rotate the keys.
        """
        if cache is not None:
            return self._forward_cached(x, seqlens, rope, rope_tables, cache, layer, key_tables)
        N, C = x.shape
        qkv = self.qkv(x).view(N, 3, self.heads, self.head_dim)  # [N, 3, H, D]
        if self.qk_norm:
            qk = torch.stack((self.q_norm(qkv[:, 0]), self.k_norm(qkv[:, 1])), 1)  # [N, 2, H, D]
        else:
            qk = qkv[:, :2]  # [N, 2, H, D]
        if rope is not None and rope_tables is not None:
            qk = rope.apply(qk, rope_tables)  # q and k rotated together: fewer kernel launches
        q, k = qk.unbind(1)  # [N, H, D] each
        out = self.attention_fn(q, k, qkv[:, 2], seqlens)  # [N, H, D]
        return self.proj(out.reshape(N, C))  # [N, C]

    def _forward_cached(
        self,
        x: torch.Tensor,
        seqlens: torch.Tensor,
        rope: Rope4D | None,
        rope_tables: RopeTables | None,
        cache: KVCache,
        layer: int,
        key_tables: RopeTables | None,
    ) -> torch.Tensor:
        """One sample's queries against (held + its own) keys and values."""
        N, C = x.shape
        qkv = self.qkv(x).view(N, 3, self.heads, self.head_dim)  # [N, 3, H, D]
        q, k, v = qkv.unbind(1)  # [N, H, D] each
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        k, v = cache.extend(layer, k, v)  # [M + N, H, D] each: after qk-norm, before RoPE
        if rope is not None and rope_tables is not None and key_tables is not None:
            q = rope.apply(q, rope_tables)  # [N, H, D]
            k = rope.apply(k, key_tables)  # [M + N, H, D]
        kv_seqlens = seqlens.new_full((1,), k.shape[0])  # [1]
        out = call_attention(self.attention_fn, q, k, v, seqlens, kv_seqlens)  # [N, H, D]
        return self.proj(out.reshape(N, C))  # [N, C]


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))`` with a hidden width and GELU (tanh approximation or exact)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        bias: bool = True,
        act: Literal["gelu_tanh", "gelu"] = "gelu_tanh",
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = _make_act(act)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., C]`` -> ``[..., C]``."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        dim, heads, mlp_hidden: width, heads and MLP hidden width.
        norm, eps: ``"layernorm"`` or ``"rmsnorm"`` and its epsilon (blocks and qk-norm).
        bias: biases in every linear layer and LayerNorm.
        qk_norm: per-head normalisation of q and k.
        qk_norm_per_head: with a gain per head (:class:`HeadRMSNorm`).
        act: the MLP activation.
        attention_fn: the packed attention backend.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        *,
        norm: Literal["layernorm", "rmsnorm"] = "layernorm",
        eps: float = 1e-6,
        bias: bool = True,
        qk_norm: bool = False,
        qk_norm_per_head: bool = False,
        act: Literal["gelu_tanh", "gelu"] = "gelu_tanh",
        attention_fn: AttentionFn = attention_sdpa,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim, eps=eps, bias=bias)
        self.attn = Attention(
            dim,
            heads,
            qkv_bias=bias,
            proj_bias=bias,
            qk_norm=qk_norm,
            qk_norm_per_head=qk_norm_per_head,
            norm=norm,
            eps=eps,
            attention_fn=attention_fn,
        )
        self.norm2 = make_norm(norm, dim, eps=eps, bias=bias)
        self.mlp = Mlp(dim, mlp_hidden, bias=bias, act=act)

    def forward(
        self,
        x: torch.Tensor,
        seqlens: torch.Tensor,
        rope: Rope4D | None = None,
        rope_tables: RopeTables | None = None,
        *,
        cache: KVCache | None = None,
        layer: int = 0,
        key_tables: RopeTables | None = None,
    ) -> torch.Tensor:
        """``x [N, C]`` -> ``[N, C]``; ``cache``, ``layer``, ``key_tables``: see
        :meth:`Attention.forward`."""
        h = self.norm1(x)  # [N, C]
        x = x + self.attn(
            h, seqlens, rope, rope_tables, cache=cache, layer=layer, key_tables=key_tables
        )
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of pre-norm blocks over packed samples, with optional 4D RoPE in every layer.

    Args:
        depth, dim, heads, mlp_hidden: the stack's shape.
        norm, eps, bias, qk_norm, qk_norm_per_head, act: block options (see :class:`Block`).
        rope: the shared :class:`Rope4D` (None: no rotary embedding).
        attention_fn: the packed attention backend.
        grad_checkpointing: recompute each block in the backward pass (training only).
    """

    def __init__(
        self,
        depth: int,
        dim: int,
        heads: int,
        mlp_hidden: int,
        *,
        norm: Literal["layernorm", "rmsnorm"] = "layernorm",
        eps: float = 1e-6,
        bias: bool = True,
        qk_norm: bool = False,
        qk_norm_per_head: bool = False,
        act: Literal["gelu_tanh", "gelu"] = "gelu_tanh",
        rope: Rope4D | None = None,
        attention_fn: AttentionFn = attention_sdpa,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(
                dim,
                heads,
                mlp_hidden,
                norm=norm,
                eps=eps,
                bias=bias,
                qk_norm=qk_norm,
                qk_norm_per_head=qk_norm_per_head,
                act=act,
                attention_fn=attention_fn,
            )
            for _ in range(depth)
        )
        self.rope = rope
        self.grad_checkpointing = grad_checkpointing

    @classmethod
    def from_config(
        cls, config: BackboneConfig, *, attention_fn: AttentionFn = attention_sdpa
    ) -> Transformer:
        """The stack a :class:`BackboneConfig` describes, with its 4D RoPE when enabled."""
        rope = None
        if config.rope:
            rope = Rope4D(
                config.head_dim,
                theta=config.rope_theta,
                pair_layout=config.rope_pairs,
                frequencies=config.rope_frequencies,
                axis_order=config.rope_axis_order,
            )
        return cls(
            config.depth,
            config.width,
            config.heads,
            config.mlp_hidden,
            norm=config.norm,
            eps=config.norm_eps,
            bias=config.bias,
            qk_norm=config.qk_norm,
            qk_norm_per_head=config.qk_norm_per_head,
            act=config.act,
            rope=rope,
            attention_fn=attention_fn,
            grad_checkpointing=config.grad_checkpointing,
        )

    def set_attention_fn(self, attention_fn: AttentionFn) -> None:
        """Use ``attention_fn`` in every block from now on."""
        for block in self.blocks:
            block.attn.attention_fn = attention_fn

    @property
    def attention_fn(self) -> Callable | None:
        """The attention backend of the first block (all blocks share one)."""
        return self.blocks[0].attn.attention_fn if len(self.blocks) else None

    def forward(
        self,
        x: torch.Tensor,
        seqlens: torch.Tensor,
        coords: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """``x [N, C]``, ``seqlens int64 [B]``, ``coords int32 [N, 4]`` -> ``[N, C]``.

        With ``cache`` (one sample, B = 1; ``coords`` in the cache's time frame, i.e. t shifted
        by ``cache.held_steps``) the queries also attend to the held keys and values, and every
        layer's (held + new) K and V are staged; the caller then calls ``cache.commit(steps)``
        (see :func:`atoken.core.kv_cache.decode_with_cache`). That path is for inference: it
        never checkpoints (recomputing a layer would read the cache twice).

        Raises:
            ConfigError: when the stack has RoPE but no coordinates are given, or a cache is
                given with no coordinates or for other than one sample.
        """
        if cache is not None:
            return self._forward_cached(x, seqlens, coords, cache)
        tables = None
        if self.rope is not None:
            if coords is None:
                raise ConfigError("this transformer applies 4D RoPE: pass coords [N, 4]")
            tables = self.rope.tables(coords)  # (cos, sin) [N, 1, D/2], shared by all layers
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, seqlens, self.rope, tables, use_reentrant=False)
            else:
                x = block(x, seqlens, self.rope, tables)
        return x

    def _forward_cached(
        self, x: torch.Tensor, seqlens: torch.Tensor, coords: torch.Tensor | None, cache: KVCache
    ) -> torch.Tensor:
        """:meth:`forward` of one sample whose layers also read and stage ``cache``."""
        if seqlens.shape != (1,):
            raise ConfigError(
                f"a KV cache holds one sample: seqlens must be [1], got {tuple(seqlens.shape)}"
            )
        if coords is None:
            raise ConfigError("decoding with a KV cache needs coords [N, 4] (its time axis)")
        key_coords = cache.begin(coords)  # [M + N, 4]: held keys first
        tables = key_tables = None
        if self.rope is not None:
            key_tables = self.rope.tables(key_coords)  # [M + N, 1, D/2], shared by all layers
            tables = key_tables[key_coords.shape[0] - coords.shape[0] :]  # [N, 1, D/2]
        for i, block in enumerate(self.blocks):
            x = block(x, seqlens, self.rope, tables, cache=cache, layer=i, key_tables=key_tables)
        return x
