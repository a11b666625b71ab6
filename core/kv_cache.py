"""The decoder's KV cache across temporal tiles, and a decoder pass that reads and fills it.

Shapes:
    n  tokens of the current tile (one sample), M tokens held in the cache
    H  heads, D head dimension, C width, L latent channels
    latent [n, L], coords int32 [n, 4] = (t, x, y, z) with t re-based to the tile (0..S-1)
    per layer: k, v [M, H, D] and their coords int32 [M, 4]

What is stored (the official decoder's convention): K **after qk-norm and before RoPE**, and V,
of the last ``steps`` latent time steps. RoPE is applied afresh at every tile, so cached keys are
rotated with coordinates consistent with the new tile: the held steps sit at t = 0..c-1 and the
tile's tokens are shifted to t = c..c+S-1 (c = steps held). Only differences of coordinates enter
the attention logits, so this equals using absolute time, while coordinates stay bounded by
``c + S`` however long the clip is.

With ``steps == 0`` nothing is held and every tile is decoded independently. The cache lives
outside the model (one per clip being decoded); its size is bounded by
``layers * 2 * steps * tokens_per_step * C`` values, whatever the clip length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import ConfigError

__all__ = ["KVCache", "decode_with_cache"]


class KVCache:
    """Per-layer K (post qk-norm, pre-RoPE) and V of the last ``steps`` latent steps.

    Args:
        steps: latent time steps to keep (0: no cache, tiles are independent).
    """

    def __init__(self, steps: int) -> None:
        if not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"kv_cache_steps must be an int >= 0, got {steps!r}")
        self.steps = steps
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._staged: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.held_steps = 0  # c: time steps the cache holds now (they sit at t = 0..c-1)

    def reset(self) -> None:
        """Forget everything (start of a new clip)."""
        self._layers.clear()
        self._staged.clear()
        self.held_steps = 0

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(k [M, H, D], v [M, H, D], coords [M, 4])`` held for layer ``index``, or None."""
        return self._layers.get(index)

    def stage(self, index: int, k: torch.Tensor, v: torch.Tensor, coords: torch.Tensor) -> None:
        """Offer layer ``index``'s keys and values of (cache + tile); kept on :meth:`commit`."""
        if self.steps:
            self._staged[index] = (k.detach(), v.detach(), coords)

    def commit(self) -> None:
        """Keep the last ``steps`` time steps of what was staged, re-based to t = 0..c-1."""
        if not self.steps or not self._staged:
            self._staged.clear()
            return
        coords = next(iter(self._staged.values()))[2]  # the same for every layer
        end = int(coords[:, 0].max()) + 1
        first = max(0, end - self.steps)
        keep = coords[:, 0] >= first  # [M + n]
        kept = coords[keep].clone()
        kept[:, 0] -= first
        self._layers = {i: (k[keep], v[keep], kept) for i, (k, v, _) in self._staged.items()}
        self._staged.clear()
        self.held_steps = end - first

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache's tensors."""
        return sum(t.numel() * t.element_size() for e in self._layers.values() for t in e)


def _cached_attention(
    attn: nn.Module,
    x: torch.Tensor,
    coords: torch.Tensor,
    rope: nn.Module | None,
    cache: KVCache | None,
    index: int,
) -> torch.Tensor:
    """One attention layer of one sample whose queries also see the cached keys and values."""
    N, C = x.shape
    H, D = attn.heads, attn.head_dim
    qkv = attn.qkv(x).view(N, 3, H, D)  # [n, 3, H, D]
    q, k, v = qkv.unbind(1)  # [n, H, D] each
    if attn.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    held = cache.layer(index) if cache is not None else None
    if held is not None:
        k = torch.cat([held[0].to(k.dtype), k])  # [M + n, H, D]
        v = torch.cat([held[1].to(v.dtype), v])  # [M + n, H, D]
        k_coords = torch.cat([held[2], coords])  # [M + n, 4]
    else:
        k_coords = coords
    if cache is not None:
        cache.stage(index, k, v, k_coords)  # after qk-norm, before RoPE
    if rope is not None:
        q = rope.apply(q, rope.tables(coords))
        k = rope.apply(k, rope.tables(k_coords))
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    )  # [1, H, n, D]
    return attn.proj(out[0].transpose(0, 1).reshape(N, C))  # [n, C]


def decode_with_cache(
    decoder: nn.Module,
    latent: torch.Tensor,
    coords: torch.Tensor,
    cache: KVCache | None = None,
) -> torch.Tensor:
    """Decode one tile of one sample: ``latent [n, L]``, ``coords [n, 4]`` -> tokens ``[n, C]``.

    ``coords`` are the tile's own (t from 0); they are shifted by the steps the cache holds.
    Without a cache (or with ``steps == 0``) this equals ``decoder(latent, coords, [n])``.
    The cache is updated with this tile's keys and values.

    Raises:
        ConfigError: a latent of the wrong width.
    """
    if latent.ndim != 2 or latent.shape[1] != decoder.latent_dim:
        raise ConfigError(
            f"decoder expects a latent [N, {decoder.latent_dim}], got {tuple(latent.shape)}"
        )
    if cache is not None and cache.held_steps:
        coords = coords.clone()
        coords[:, 0] += cache.held_steps
    transformer = decoder.transformer
    x = decoder.in_proj(latent)  # [n, C]
    for i, block in enumerate(transformer.blocks):
        x = x + _cached_attention(block.attn, block.norm1(x), coords, transformer.rope, cache, i)
        x = x + block.mlp(block.norm2(x))
    if cache is not None:
        cache.commit()
    return decoder.norm(x)  # [n, C]
