"""The memory a tokenizer config asks for, checked before a single weight is allocated.

A valid but huge config (``width = 24000000`` in a run file's ``[model] overrides``) would
otherwise fail deep inside the allocator with a message that names no key. The check: the
parameters of the encoder and decoder stacks (counted on the meta device, which allocates
nothing) times the bytes of the default dtype, against this machine's memory (physical memory,
or the cgroup's limit when lower; a CUDA device's memory when that is the default device).
A quick count of the big matrices screens the usual configs first, so a normal build pays
microseconds.

    check_model_size(config, overrides={"width": 24_000_000}, preset="tiny")
    # ConfigError: the tokenizer would hold about ... parameters (... TB as float32), more
    # than the ... GB of memory here; set by the overrides width = 24000000 (on preset 'tiny')
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from atoken.core.config import BackboneConfig, TokenizerConfig, load_preset
from atoken.core.errors import ConfigError

__all__ = ["SIZE_KEYS", "check_model_size", "memory_limit", "parameter_count"]

# a stack's int fields but its head count: its layers and widths
_STACK = tuple(
    f.name for f in attrs.fields(BackboneConfig) if f.type == "int" and f.name != "heads"
)
#: The flat override keys (:meth:`TokenizerConfig.with_overrides`) that set the parameter count.
SIZE_KEYS = (
    *_STACK,
    *(f"decoder_{key}" for key in _STACK),
    "latent_dim",
    "patch_size",
    "temporal_patch",
    "in_channels",
    "pos_grid",
    "map_mlp_hidden",
)
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def _rough_count(config: TokenizerConfig) -> int:
    """The big matrices only (blocks, MAP head, patch and position tables): a quick estimate
    within a few percent of :func:`parameter_count`."""
    enc = config.encoder
    stacks: list[BackboneConfig] = [enc.backbone, *([config.decoder] if config.decoder else [])]
    count = sum(b.depth * (4 * b.width**2 + 2 * b.width * b.mlp_hidden) for b in stacks)
    width, tables = enc.backbone.width, math.prod(enc.pos_grid)
    count += width * (enc.patch_dim + tables + config.latent_dim)
    count += 4 * width**2 + 2 * width * (enc.map_mlp_hidden or enc.backbone.mlp_hidden)
    if config.decoder is not None:
        count += config.decoder.width * (config.latent_dim + tables + enc.patch_dim)
    return count


def parameter_count(config: TokenizerConfig) -> int:
    """The parameters of the encoder and decoder ``config`` describes, counted on a build on
    the meta device (no memory). The modalities' own projections and heads and a text tower
    are left out: they are a small part, and their plugins are not run here."""
    from atoken.core.decoder import Decoder
    from atoken.core.encoder import Encoder

    with torch.device("meta"):
        modules = [Encoder(config.encoder)]
        if config.decoder is not None:
            modules.append(
                Decoder(
                    config.decoder,
                    latent_dim=config.latent_dim,
                    final_norm=config.decoder_final_norm,
                    pos_grid=config.encoder.pos_grid if config.decoder_pos_table else None,
                )
            )
    return sum(p.numel() for m in modules for p in m.parameters())


def memory_limit() -> int | None:
    """Bytes of memory a model built now may take: the default device's memory on CUDA, else
    the physical memory (the cgroup's limit when lower); None when unknown."""
    device = torch.get_default_device()
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    limits = []
    with contextlib.suppress(AttributeError, OSError, ValueError):  # not a POSIX system
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    positive = [n for n in limits if n > 0]
    return min(positive) if positive else None


def _changed_sizes(overrides: Mapping[str, Any], preset: str | None) -> dict[str, Any]:
    """The size keys of ``overrides`` that change the preset (a run file passes its
    ``latent_dim`` even when it is the preset's)."""
    sized = {k: v for k, v in overrides.items() if k in SIZE_KEYS}
    if preset is None:
        return sized
    base = load_preset(preset)
    changed = {}
    for key, value in sized.items():
        try:
            same = base.with_overrides(**{key: value}) == base
        except ConfigError:  # valid only with the other overrides (width with heads)
            same = False
        if not same:
            changed[key] = value
    return changed or sized


def _size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} bytes"


def check_model_size(
    config: TokenizerConfig,
    *,
    overrides: Mapping[str, Any] | None = None,
    preset: str | None = None,
) -> None:
    """Refuse a config whose weights alone would not fit in :func:`memory_limit`.

    ``overrides`` (the flat overrides the config was made with) and ``preset`` name where
    the size came from in the message. Nothing happens when the memory is unknown or the
    default device is ``meta`` (a build that allocates nothing, as ``atoken train --plan``).

    Raises:
        ConfigError: naming the estimated parameters and bytes, the memory, and the
            overridden size keys (else the config's sizes).
    """
    if torch.get_default_device().type == "meta":  # a meta build allocates nothing (--plan)
        return
    limit = memory_limit()
    if limit is None:
        return
    itemsize = torch.empty((), dtype=torch.get_default_dtype(), device="meta").element_size()
    if 2 * _rough_count(config) * itemsize < limit:  # far from the limit: no build needed
        return
    count = parameter_count(config)
    needed = count * itemsize
    if needed <= limit:
        return
    dtype = str(torch.get_default_dtype()).removeprefix("torch.")
    given = _changed_sizes(overrides or {}, preset)
    if given:
        cause = "the overrides " + ", ".join(f"{k} = {v!r}" for k, v in given.items())
        if preset:
            cause += f" (on preset {preset!r})"
    else:
        enc = config.encoder.backbone
        cause = (
            f"{'preset ' + repr(preset) if preset else 'the config'}: encoder depth "
            f"{enc.depth}, width {enc.width}, mlp_hidden {enc.mlp_hidden}"
        )
        if config.decoder is not None:
            dec = config.decoder
            cause += f"; decoder depth {dec.depth}, width {dec.width}, mlp_hidden {dec.mlp_hidden}"
    raise ConfigError(
        f"the tokenizer would hold about {count:,} parameters ({_size(needed)} as {dtype}), "
        f"more than the {_size(limit)} of memory here; set by {cause}"
    )
