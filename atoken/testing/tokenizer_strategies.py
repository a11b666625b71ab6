"""Hypothesis strategies for what a tokenizer takes: samples of its modalities, mixed batches,
latents it decodes, time-tiling plans and FSQ levels.

Shapes: a latent's feats [N, L] (L = ``config.latent_dim``), coords int32 [N, 4]; FSQ ids
int32 [N, G] for ``G`` groups of ``d`` channels each.

The strategies that take a ``tokenizer`` (any :class:`atoken.core.model.ATokenModel`: a
:class:`atoken.Tokenizer`) read only its public parts (``modalities``, ``modality(name)``,
``config.latent_dim``, ``bottleneck``); build it once per test module and pass it in:

    tok = atoken.create_tokenizer("tiny")

    @settings(max_examples=10, deadline=None)
    @given(decodable_latents(tokenizer=tok, max_samples=3))
    def test_decode(latent):
        assert len(tok.decode(latent)) == latent.batch_size

Import them all from :mod:`atoken.testing.strategies`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.plugins.bottlenecks.fsq import MAX_CODEBOOK

__all__ = [
    "TilingPlan",
    "decodable_latents",
    "fsq_levels",
    "mixed_batches",
    "modality_examples",
    "tiling_plans",
]


@st.composite
def modality_examples(draw: st.DrawFn, *, modality: Modality, max_seed: int = 2**16) -> Any:
    """One raw sample of ``modality``: one of its ``examples(seed)`` for a seed drawn in
    ``[0, max_seed)`` (the samples every modality must provide for the contracts)."""
    seed = draw(st.integers(0, max_seed - 1))
    examples = list(modality.examples(seed))
    if not examples:
        raise InvalidArgument(f"{modality.name}: examples({seed}) gave no sample")
    return examples[draw(st.integers(0, len(examples) - 1))]


def _sample_strategies(
    tokenizer: Any, samples: Mapping[str, st.SearchStrategy] | None, names: Sequence[str] | None
) -> dict[str, st.SearchStrategy]:
    """Name -> strategy of raw samples: ``samples`` as given, else the ``modality_examples``
    of the tokenizer's modalities (``names``, or all of them)."""
    if samples is not None:
        out = dict(samples)
    elif tokenizer is None:
        raise InvalidArgument("pass a tokenizer, or samples={name: strategy of raw samples}")
    else:
        chosen = tokenizer.modalities if names is None else names
        out = {name: modality_examples(modality=tokenizer.modality(name)) for name in chosen}
    if not out:
        raise InvalidArgument("no modality to draw samples of")
    return out


def _names(
    draw: st.DrawFn, names: Sequence[str], min_samples: int, max_samples: int, min_distinct: int
) -> list[str]:
    """``B`` in ``[min_samples, max_samples]`` names of ``names``, ``min_distinct`` of them
    distinct, in a drawn order."""
    if not 0 <= min_distinct <= min(len(names), max_samples) or min_samples > max_samples:
        raise InvalidArgument(
            f"need min_samples <= max_samples and min_modalities <= {min(len(names), max_samples)}"
            f", got {min_samples}, {max_samples}, {min_distinct}"
        )
    required = draw(st.permutations(list(names)))[:min_distinct]
    rest = draw(
        st.lists(
            st.sampled_from(list(names)),
            min_size=max(0, min_samples - min_distinct),
            max_size=max_samples - min_distinct,
        )
    )
    chosen = [*required, *rest]
    return [chosen[i] for i in draw(st.permutations(range(len(chosen))))]


@st.composite
def mixed_batches(
    draw: st.DrawFn,
    *,
    tokenizer: Any = None,
    samples: Mapping[str, st.SearchStrategy] | None = None,
    min_samples: int = 0,
    max_samples: int = 4,
    min_modalities: int = 0,
) -> tuple[list[Any], list[str]]:
    """A batch of raw samples of several modalities and the modality of each:
    ``(samples, names)``, for ``tokenizer.encode(samples, modality=names)``.

    Args:
        tokenizer: draw from the ``modality_examples`` of its modalities.
        samples: or from these strategies of raw samples, by modality name (e.g.
            ``{"image": images(max_side=32), "video": videos(max_frames=5)}``).
        min_samples, max_samples: the batch size (0: the empty batch included).
        min_modalities: at least this many distinct modalities (2: always mixed).
    """
    strategies = _sample_strategies(tokenizer, samples, None)
    names = _names(draw, list(strategies), min_samples, max_samples, min_modalities)
    return [draw(strategies[name]) for name in names], names


@st.composite
def decodable_latents(
    draw: st.DrawFn,
    *,
    tokenizer: Any,
    modalities: Sequence[str] | None = None,
    samples: Mapping[str, st.SearchStrategy] | None = None,
    min_samples: int = 0,
    max_samples: int = 3,
    bound: float = 3.0,
) -> SparseLatent:
    """A latent that ``tokenizer.decode`` takes, shaped for its config: per sample, one of its
    modalities (of ``modalities``, default all), the coords and meta of a raw sample of it
    patchified (a ``modality_examples`` draw, or ``samples[name]``), so they follow the
    modality's layout and grid, and feats ``[n, config.latent_dim]``: values in
    ``[-bound, bound]`` for a continuous bottleneck, the codes of drawn ids (what
    ``detokenize`` decodes) for a discrete one (a bottleneck with ``ids_to_codes``).
    """
    strategies = _sample_strategies(tokenizer, samples, modalities)
    names = _names(draw, list(strategies), min_samples, max_samples, 0)
    L = int(tokenizer.config.latent_dim)
    bottleneck = tokenizer.bottleneck
    discrete = hasattr(bottleneck, "ids_to_codes")
    feats, coords, metas = [], [], []
    for name in names:
        _, c, meta = tokenizer.modality(name).patchify(draw(strategies[name]))  # [n, 4]
        n = c.shape[0]
        if discrete:  # one drawn id per token and group, as codes
            sizes = [int(size) for size in bottleneck.codebook_sizes]
            ids = [[draw(st.integers(0, size - 1)) for size in sizes] for _ in range(n)]
            ids_t = torch.tensor(ids, dtype=torch.int32).reshape(n, len(sizes))  # [n, G]
            f = bottleneck.ids_to_codes(ids_t.to(tokenizer.device)).cpu()  # [n, L]
        else:
            values = st.floats(-bound, bound, allow_nan=False, width=32)
            f = torch.from_numpy(draw(hnp.arrays(np.float32, (n, L), elements=values)))
        feats.append(f.float().reshape(n, L))
        coords.append(c.to(torch.int32))
        metas.append(meta)
    return SparseLatent(
        torch.cat(feats) if feats else torch.zeros(0, L),
        torch.cat(coords) if coords else torch.zeros(0, 4, dtype=torch.int32),
        torch.tensor([c.shape[0] for c in coords], dtype=torch.int64),
        modality=names,
        meta=metas,
    )


@attrs.frozen(kw_only=True)
class TilingPlan:
    """How a clip is cut in time: what :class:`atoken.modalities.video.tiling.TilingConfig`
    and ``Tokenizer.encode(tile_steps=...)``/``decode(kv_cache_steps=...)`` take, with the
    tiles they make as an oracle.

    Attributes:
        frames: the clip's frames before striding (>= 1).
        temporal_patch: frames per latent step (the encoder's ``temporal_patch``, pt).
        tile_steps: latent steps per tile (S >= 1).
        kv_cache_steps: latent steps of K/V the decoder keeps across tiles (0: none).
        frame_stride: keep every s-th frame.
    """

    frames: int
    temporal_patch: int
    tile_steps: int
    kv_cache_steps: int
    frame_stride: int

    @property
    def tile_frames(self) -> int:
        """Frames per tile, ``S * pt``."""
        return self.tile_steps * self.temporal_patch

    @property
    def kept_frames(self) -> int:
        """Frames left after striding, ``ceil(frames / frame_stride)``."""
        return -(-self.frames // self.frame_stride)

    @property
    def latent_steps(self) -> int:
        """Latent time steps of the kept frames, ``ceil(kept_frames / pt)``."""
        return -(-self.kept_frames // self.temporal_patch)

    def frame_tiles(self) -> list[tuple[int, int]]:
        """``(start, frames)`` of each tile of the kept frames, in order."""
        T, F = self.kept_frames, self.tile_frames
        return [(start, min(F, T - start)) for start in range(0, T, F)]

    def step_tiles(self) -> list[tuple[int, int]]:
        """``(start, steps)`` of each tile in latent steps, in order (one per frame tile)."""
        return [
            (s // self.temporal_patch, -(-n // self.temporal_patch)) for s, n in self.frame_tiles()
        ]


@st.composite
def tiling_plans(
    draw: st.DrawFn,
    *,
    temporal_patch: int = 4,
    max_tile_steps: int = 3,
    max_tiles: int = 3,
    max_kv_cache_steps: int = 4,
    max_frame_stride: int = 2,
) -> TilingPlan:
    """A :class:`TilingPlan` for an encoder of ``temporal_patch``: S in
    ``[1, max_tile_steps]``, a clip of 1 to ``max_tiles`` tiles (the last one often short, one
    frame included), a KV cache of ``[0, max_kv_cache_steps]`` steps and a frame stride in
    ``[1, max_frame_stride]``."""
    if min(temporal_patch, max_tile_steps, max_tiles, max_frame_stride) < 1:
        raise InvalidArgument("temporal_patch, max_tile_steps, max_tiles, max_frame_stride >= 1")
    S = draw(st.integers(1, max_tile_steps))
    stride = draw(st.integers(1, max_frame_stride))
    kept = draw(st.integers(1, max_tiles * S * temporal_patch))
    frames = (kept - 1) * stride + draw(st.integers(1, stride))  # ceil(frames / stride) = kept
    return TilingPlan(
        frames=frames,
        temporal_patch=temporal_patch,
        tile_steps=S,
        kv_cache_steps=draw(st.integers(0, max_kv_cache_steps)),
        frame_stride=stride,
    )


def _levels(draw: st.DrawFn, d: int, lo: int, max_level: int, budget: int) -> list[int]:
    """``d`` levels in ``[lo, max_level]`` whose product is at most ``budget``."""
    out = []
    for i in range(d):
        hi = min(max_level, budget // lo ** (d - i - 1))  # room for the rest at ``lo`` each
        level = draw(st.integers(lo, hi))
        budget //= level
        out.append(level)
    return out


@st.composite
def fsq_levels(
    draw: st.DrawFn,
    *,
    per_group: bool | None = None,
    max_dim: int = 6,
    max_groups: int = 4,
    max_level: int = 256,
    max_codebook: int = MAX_CODEBOOK,
) -> dict[str, Any]:
    """FSQ parameters ``{"levels": ..., "groups": G}`` that
    :class:`atoken.plugins.bottlenecks.fsq.FSQBottleneck` (``FSQBottleneck(in_dim=C,
    **params)``) and a config's ``bottleneck_params`` accept.

    ``per_group`` False: one list of ``d`` levels for every group, each >= 3; True: ``G``
    lists of ``d`` levels, each >= 1 (a level of 1 drops a channel, 2 is one bit); None: either.
    ``d`` is in ``[1, max_dim]``, each level at most ``max_level``, and a group holds at most
    ``max_codebook`` codes (default the most the FSQ code accepts, ``MAX_CODEBOOK = 2**31``),
    so large codebooks (above 2^24 codes, where float32 ids would be inexact) are drawn too.
    """
    if not 1 <= max_codebook <= MAX_CODEBOOK or min(max_dim, max_groups) < 1 or max_level < 3:
        raise InvalidArgument(
            f"need 1 <= max_codebook <= {MAX_CODEBOOK}, max_dim, max_groups >= 1, max_level >= 3"
        )
    nested = draw(st.booleans()) if per_group is None else per_group
    lo = 1 if nested else 3
    widest = max(1, min(max_dim, int(math.log(max_codebook, lo)) if lo > 1 else max_dim))
    while lo**widest > max_codebook:  # the float log may round up
        widest -= 1
    if widest < 1:
        raise InvalidArgument(f"max_codebook={max_codebook} holds no level of >= {lo}")
    d = draw(st.integers(1, widest))
    groups = draw(st.integers(1, max_groups))
    if nested:
        rows = [_levels(draw, d, lo, max_level, max_codebook) for _ in range(groups)]
        return {"levels": rows, "groups": groups}
    return {"levels": _levels(draw, d, lo, max_level, max_codebook), "groups": groups}
