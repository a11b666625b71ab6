"""The decoder's KV cache across temporal tiles, and a decoder pass that reads and fills it.

Shapes:
    n  tokens of the current tile (one sample), M tokens held in the cache
    S  latent time steps of the tile, c = held steps (``KVCache.held_steps``), W = ``steps``
    H  heads, D head dimension, C width, L latent channels
    latent [n, L], coords int32 [n, 4] = (t, x, y, z) with t local to the tile (0..S-1)
    per layer: k, v [M, H, D]; their coords int32 [M, 4] (the same for every layer)

What is stored (the official decoder's convention): K **after qk-norm and before RoPE**, and V,
of the last ``W`` latent time steps. The decoder runs through the ordinary
:class:`~atoken.core.transformer.Transformer` (``transformer(x, seqlens, coords, cache=cache)``)
and so through the registered attention backend: each layer puts the held K and V in front of
the tile's, stages them in the cache, rotates q by the tile's coordinates and k by the
concatenated ones, and attends with ``kv_seqlens = [M + n]`` (see
:func:`~atoken.core.attention.call_attention`).

Time is re-based so coordinates stay bounded however long the clip is: the held steps sit at
t = 0..c-1 and the tile occupies t = c..c+S-1 (its local t shifted by c). Only differences of
coordinates enter the attention logits, so this equals using absolute time. After the tile,
:meth:`KVCache.commit` keeps the keys with ``t >= c + S - W`` (the window's last W steps),
shifts them to start at 0 and sets ``c = min(W, c + S)``. The tile's length S is explicit
(``decode_with_cache(..., steps=S)``): a sparse tile whose last steps hold no tokens (a box
query) still advances time by S, and an empty tile just ages the cache by S steps. With
``steps=None`` S is inferred as ``max t + 1`` of what the tile holds (the old rule; wrong for
sparse tiles, kept for compatibility).

With ``W == 0`` nothing is held and every tile is decoded independently. The cache lives
outside the model (one per clip being decoded); its size is bounded by
``layers * 2 * W * tokens_per_step * C`` values, whatever the clip length.
"""

from __future__ import annotations

import torch
from torch import nn

from atoken.core.errors import ConfigError

__all__ = ["KVCache", "decode_with_cache"]


def _check_steps(steps: int | None) -> None:
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ConfigError(
            f"steps (the tile's latent time steps) must be an int >= 0, got {steps!r}"
        )


class KVCache:
    """Per-layer K (post qk-norm, pre-RoPE) and V of one sample's last ``steps`` latent steps.

    One tile's pass is :meth:`begin` (once), :meth:`extend` (once per layer) and
    :meth:`commit` (once, with the tile's step count); :func:`decode_with_cache` and
    :meth:`Transformer.forward <atoken.core.transformer.Transformer.forward>` do that.

    Args:
        steps: latent time steps to keep (0: no cache, tiles are independent).

    Raises:
        ConfigError: ``steps`` is not an int >= 0.
    """

    def __init__(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"kv_cache_steps must be an int >= 0, got {steps!r}")
        self.steps = steps
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._coords: torch.Tensor | None = None  # [M, 4], shared by every layer
        self._staged: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._staged_coords: torch.Tensor | None = None  # [M + n, 4]
        self.held_steps = 0  # c: time steps the cache holds now (they sit at t = 0..c-1)

    def reset(self) -> None:
        """Forget everything (start of a new clip)."""
        self._layers.clear()
        self._staged.clear()
        self._coords = self._staged_coords = None
        self.held_steps = 0

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(k [M, H, D], v [M, H, D], coords [M, 4])`` held for layer ``index``, or None."""
        held = self._layers.get(index)
        if held is None or self._coords is None:
            return None
        return held[0], held[1], self._coords

    def begin(self, coords: torch.Tensor) -> torch.Tensor:
        """Start a tile whose tokens sit at ``coords [n, 4]`` (t already shifted by
        ``held_steps``); returns the keys' coordinates ``[M + n, 4]``: held ones first."""
        key_coords = coords if self._coords is None else torch.cat([self._coords, coords])
        self._staged.clear()
        self._staged_coords = key_coords if self.steps else None
        return key_coords  # [M + n, 4]

    def extend(
        self, index: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s keys and values of (cache + tile): the held ``[M, H, D]`` in front
        of the tile's ``k, v [n, H, D]``; staged (detached) to be kept on :meth:`commit`."""
        held = self._layers.get(index)
        if held is not None:
            k = torch.cat([held[0].to(k.dtype), k])  # [M + n, H, D]
            v = torch.cat([held[1].to(v.dtype), v])  # [M + n, H, D]
        if self.steps:
            self._staged[index] = (k.detach(), v.detach())
        return k, v

    def stage(self, index: int, k: torch.Tensor, v: torch.Tensor, coords: torch.Tensor) -> None:
        """Offer layer ``index``'s keys and values of (cache + tile) with their coordinates
        ``[M + n, 4]`` directly (what :meth:`begin` and :meth:`extend` do for a layer)."""
        if self.steps:
            self._staged[index] = (k.detach(), v.detach())
            self._staged_coords = coords

    def commit(self, steps: int | None = None) -> None:
        """End the tile: it spanned ``steps`` latent steps, t = c..c+steps-1 (None: inferred
        as ``max t + 1 - c`` of the staged tokens, wrong for a tile whose last steps are
        empty). Keeps the staged keys with ``t >= c + steps - self.steps``, re-based to 0.

        Raises:
            ConfigError: ``steps`` is not an int >= 0.
        """
        _check_steps(steps)
        coords, staged = self._staged_coords, self._staged
        self._staged, self._staged_coords = {}, None
        if not self.steps:
            return
        if coords is None:  # nothing ran since the last commit: an empty tile
            coords, staged = self._coords, dict(self._layers)
        held = self.held_steps
        if steps is None:
            last = int(coords[:, 0].max()) + 1 if coords is not None and coords.numel() else 0
            steps = max(0, last - held)
        first = max(0, held + steps - self.steps)  # the window's first step
        self.held_steps = held + steps - first  # = min(self.steps, held + steps)
        if coords is None:
            return
        keep = coords[:, 0] >= first  # [M + n]
        kept = coords[keep].clone()  # [M', 4]
        kept[:, 0] -= first
        self._coords = kept
        self._layers = {i: (k[keep], v[keep]) for i, (k, v) in staged.items()}

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache's tensors."""
        held = [t for e in self._layers.values() for t in e]
        if self._coords is not None:
            held.append(self._coords)
        return sum(t.numel() * t.element_size() for t in held)


def decode_with_cache(
    decoder: nn.Module,
    latent: torch.Tensor,
    coords: torch.Tensor,
    cache: KVCache | None = None,
    *,
    steps: int | None = None,
) -> torch.Tensor:
    """Decode one tile of one sample: ``latent [n, L]``, ``coords [n, 4]`` -> tokens ``[n, C]``.

    ``coords`` are the tile's own (t in 0..steps-1); they are shifted by the steps the cache
    holds. ``steps`` is the tile's length in latent steps (None: ``max t + 1``, wrong when the
    tile's last steps hold no tokens). Without a cache (or with ``cache.steps == 0``) this is
    ``decoder(latent, coords, [n])``. The cache is updated with this tile's keys and values;
    an empty tile (n = 0) gives ``[0, C]`` and ages the cache by ``steps``.

    Raises:
        ConfigError: a latent of the wrong width, a bad ``steps``, or tokens outside
            ``0..steps-1``.
    """
    if latent.ndim != 2 or latent.shape[1] != decoder.latent_dim:
        raise ConfigError(
            f"decoder expects a latent [N, {decoder.latent_dim}], got {tuple(latent.shape)}"
        )
    _check_steps(steps)
    n = latent.shape[0]
    if steps is not None and n:
        lo, hi = (int(t) for t in torch.aminmax(coords[:, 0]))
        if lo < 0 or hi >= steps:
            raise ConfigError(f"tile tokens have t in {lo}..{hi}, outside 0..{steps - 1}")
    active = cache if cache is not None and cache.steps else None  # steps == 0: independent
    if active is not None and active.held_steps:
        coords = coords.clone()
        coords[:, 0] += active.held_steps  # the tile follows the held steps
    seqlens = torch.tensor([n], dtype=torch.int64, device=latent.device)  # [1]
    x = decoder.embed(latent, coords, seqlens)  # [n, C]
    x = decoder.transformer(x, seqlens, coords, cache=active)  # [n, C]
    if active is not None:
        active.commit(steps)
    return decoder.norm(x)  # [n, C]
