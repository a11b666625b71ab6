"""The atoken config of an official AToken checkpoint: shapes from the state dict, the rest from
the official YAML (``model.model_cfg.arch_cfg``) or arguments.

Shapes read from the state dict (see :mod:`atoken.official.keys`): widths, depths, MLP widths,
the latent width (``proj`` rows / 2), the position grid, biases (a ``to_qkv.bias`` key),
the norm (a ``norm1.bias`` key means LayerNorm, else RMSNorm), the qk-norm (a
``q_rms_norm.gamma [H, D]`` key, which also gives the head count). The encoder's head count is
not in any shape: it comes from the YAML (``encoder_num_heads``) or ``heads``, else 16, the
value of every released checkpoint. So/C and So/D have identical keys; the YAML's
``use_quantizer``/``quantizer_*`` (or ``fsq=True``) make it FSQ: 8 groups of ``[4] * 6`` levels
on the posterior mean, no parameters of its own.

The official architecture, fixed by the converted config: learned 2D table + 4D RoPE in the
encoder and the decoder (``pe_mode: joint``); RoPE over (t, row, column, z) with the same
``10000 ** (-i / D)`` frequencies on each axis and interleaved pairs (``rope_axis_order`` (0, 2,
1, 3) in atoken's (t, x = column, y = row, z) coordinates); norms with epsilon 1e-6; GELU(tanh);
tiles of 4 latent steps (16 frames), encoded and decoded independently (no KV cache).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from atoken.core.config import BackboneConfig, EncoderConfig, TokenizerConfig
from atoken.core.errors import ConfigError

__all__ = [
    "FSQ_LEVELS",
    "OFFICIAL_AXIS_ORDER",
    "infer_config",
    "read_official_yaml",
    "with_official_inputs",
]

#: The official codebook sizes and their FSQ levels (``levels_from_codebook_size``).
FSQ_LEVELS: dict[int, tuple[int, ...]] = {
    2**10: (8, 5, 5, 5),
    2**12: (4, 4, 4, 4, 4, 4),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}

#: The official RoPE concatenates (t, row, column, z); atoken's coords are (t, column, row, z).
OFFICIAL_AXIS_ORDER: tuple[int, int, int, int] = (0, 2, 1, 3)

_DEFAULT_HEADS = 16
_GROUPS = 8  # So/D: quantizer_num_codebooks
_CODEBOOK = 2**12


def read_official_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The ``arch_cfg`` mapping of an official YAML config (``configs/atoken-*.yaml``).

    Raises:
        ConfigError: an unreadable file or one without ``model.model_cfg.arch_cfg``.
    """
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable official YAML config ({exc})") from exc
    arch = None
    if isinstance(doc, dict):
        arch = doc.get("model", {}).get("model_cfg", {}).get("arch_cfg")
    if not isinstance(arch, dict):
        raise ConfigError(f"{path}: no model.model_cfg.arch_cfg mapping (not an official config)")
    return arch


def _count_blocks(state: Mapping[str, torch.Tensor], part: str) -> int:
    prefix = f"{part}.blocks."
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ConfigError(f"the official state dict has no {key!r}: not an AToken checkpoint?")
    return tuple(state[key].shape)


def _backbone(
    state: Mapping[str, torch.Tensor], part: str, heads: int | None, arch: Mapping[str, Any]
) -> BackboneConfig:
    """The stack ``part`` (``encoder``/``decoder``) of the state dict."""
    depth = _count_blocks(state, part)
    if depth == 0:
        raise ConfigError(f"the official state dict has no {part}.blocks.*")
    width = _shape(state, f"{part}.blocks.0.norm1.weight")[0]
    mlp = _shape(state, f"{part}.blocks.0.mlp.mlp.0.weight")[0]
    gamma = state.get(f"{part}.blocks.0.attn.q_rms_norm.gamma")
    if heads is None:
        heads = arch.get(f"{part}_num_heads")
    if heads is None and gamma is not None:
        heads = int(gamma.shape[0])
    heads = _DEFAULT_HEADS if heads is None else int(heads)
    if gamma is not None and tuple(gamma.shape) != (heads, width // heads):
        raise ConfigError(
            f"{part}: {heads} heads but the qk-norm gain is {list(gamma.shape)} "
            f"(expected [{heads}, {width // heads}])"
        )
    for name, want in (("model_channels", width), ("num_blocks", depth), ("mlp_channels", mlp)):
        got = arch.get(f"{part}_{name}")
        if got is not None and int(got) != want:
            raise ConfigError(f"the YAML says {part}_{name}={got}, the state dict holds {want}")
    for name in ("attn_mode", "pe_mode"):
        got = arch.get(f"{part}_{name}")
        if got is not None and got != {"attn_mode": "full", "pe_mode": "joint"}[name]:
            raise ConfigError(f"{part}_{name}={got!r} is not supported (only full/joint)")
    return BackboneConfig(
        depth=depth,
        width=width,
        heads=heads,
        mlp_hidden=mlp,
        norm="layernorm" if f"{part}.blocks.0.norm1.bias" in state else "rmsnorm",
        norm_eps=1e-6,
        bias=f"{part}.blocks.0.attn.to_qkv.bias" in state,
        qk_norm=gamma is not None,
        qk_norm_per_head=gamma is not None,
        act="gelu_tanh",
        rope=True,
        rope_pairs="interleaved",
        rope_frequencies="atoken",
        rope_theta=10000.0,
        rope_axis_order=OFFICIAL_AXIS_ORDER,
    )


def _bottleneck(
    arch: Mapping[str, Any], fsq: bool | None, latent: int
) -> tuple[str, dict[str, Any], str]:
    """``(bottleneck name, params, name suffix)``."""
    if fsq is None:
        fsq = bool(arch.get("use_quantizer", False))
    if not fsq:
        return "kl", {"bias": False}, "c"
    if arch.get("quantizer_type", "fsq") != "fsq":
        raise ConfigError(f"quantizer_type={arch.get('quantizer_type')!r}: only fsq is supported")
    size = int(arch.get("quantizer_codebook_size", _CODEBOOK))
    if size not in FSQ_LEVELS:
        raise ConfigError(f"quantizer_codebook_size={size}: known sizes {sorted(FSQ_LEVELS)}")
    levels = FSQ_LEVELS[size]
    groups = int(arch.get("quantizer_num_codebooks", _GROUPS))
    if int(arch.get("quantizer_chunk_size", 1)) != 1:
        raise ConfigError("quantizer_chunk_size other than 1 is not supported")
    if groups * len(levels) != latent:
        raise ConfigError(
            f"FSQ {groups} groups x {len(levels)} levels = {groups * len(levels)} channels, "
            f"but the latent has {latent}"
        )
    params = {"levels": list(levels), "groups": groups, "bias": False, "logvar": True}
    return "fsq", params, "d"


def infer_config(
    state: Mapping[str, torch.Tensor],
    arch: Mapping[str, Any] | None = None,
    *,
    heads: int | None = None,
    decoder_heads: int | None = None,
    fsq: bool | None = None,
    modalities: tuple[str, ...] | None = None,
) -> TokenizerConfig:
    """The :class:`TokenizerConfig` that holds an official state dict exactly.

    Args:
        state: the flat official state dict.
        arch: the official YAML's ``arch_cfg`` (:func:`read_official_yaml`), or None.
        heads, decoder_heads: head counts (override the YAML; default 16 for the encoder, the
            qk-norm gain's rows for the decoder).
        fsq: force the FSQ (So/D) or KL (So/C) bottleneck; None: the YAML's ``use_quantizer``.
        modalities: the modalities to build for (default: those that need no parameters of
            their own, so every parameter comes from the checkpoint).

    Raises:
        ConfigError: a state dict that is not AToken-shaped or disagrees with the YAML.
    """
    arch = dict(arch or {})
    enc = _backbone(state, "encoder", heads, arch)
    dec = _backbone(state, "decoder", decoder_heads, arch)
    in_w = _shape(state, "encoder.input_layer.weight")
    patch = tuple(arch.get("patch_size", (4, 16, 16)))
    if len(patch) != 3 or patch[1] != patch[2] or in_w[1] != patch[0] * patch[1] * patch[2] * 3:
        raise ConfigError(
            f"encoder.input_layer.weight is {list(in_w)}: {in_w[1]} values per token do not "
            f"make a {list(patch)} x 3 patch"
        )
    latent2 = _shape(state, "proj.weight")[0]
    if latent2 % 2:
        raise ConfigError(f"proj.weight has {latent2} rows: expected [mean | logvar] (even)")
    latent = latent2 // 2
    if arch.get("latent_channels") is not None and int(arch["latent_channels"]) != latent:
        raise ConfigError(
            f"the YAML says latent_channels={arch['latent_channels']}, proj gives {latent}"
        )
    grid = _shape(state, "encoder.pos_embedder.position_embedding.weight")[0]
    side = math.isqrt(grid)
    if side * side != grid:
        raise ConfigError(f"the position table has {grid} rows: not a square grid")
    name, params, kind = _bottleneck(arch, fsq, latent)
    encoder = EncoderConfig(
        backbone=enc,
        patch_size=int(patch[1]),
        temporal_patch=int(patch[0]),
        in_channels=3,
        pos_table=True,
        pos_grid=(side, side),
        final_norm=True,
        map_head=True,
        map_mlp_hidden=_shape(state, "encoder.head.mlp.mlp.0.weight")[0],
    )
    config = TokenizerConfig(
        name=f"official-so{kind}" if enc.width == 1152 else f"official-{kind}-{enc.width}",
        encoder=encoder,
        decoder=dec,
        latent_dim=latent,
        input_mean=(0.5, 0.5, 0.5),
        input_std=(0.5, 0.5, 0.5),
        bottleneck=name,
        bottleneck_params=params,
        head="pixels",
        decoder_final_norm=True,
        decoder_pos_table="decoder.pos_embedder.position_embedding.weight" in state,
        tile_steps=4,
        kv_cache_steps=0,
        modalities=modalities,
    )
    if modalities is None:
        from atoken.factory import parameter_free_modalities

        config = config.with_overrides(modalities=tuple(parameter_free_modalities(config)))
    return config


def with_official_inputs(config: TokenizerConfig) -> TokenizerConfig:
    """``config`` with every one of its modalities reading samples as the official release
    does: each modality class's ``official_params`` under its ``modality_params`` (the mesh
    modality: ``packing = "official"``; images and video need none); a value the config
    already gives for a key wins (``packing = "atoken"`` keeps atoken's own). A modality on the
    shared RGB path whose default head is another (the mesh modality's ``gaussians``) and to
    which ``config.heads`` gives none is decoded by the shared head, as the official decoder
    does: its patches (the official Gaussian decoder is ``gaussian_decoder=``)."""
    from atoken.factory import registered_modality, shares_pixel_path

    params = {k: dict(v) for k, v in config.modality_params.items()}
    heads = dict(config.heads)
    for name in config.modalities or ():
        mod = registered_modality(config, name)
        official = dict(type(mod).official_params)
        if official:
            params[name] = {**official, **params.get(name, {})}
        other_default = mod.default_head not in (None, config.head)
        if name not in heads and other_default and shares_pixel_path(config, mod):
            heads[name] = config.head
    return config.with_overrides(modality_params=params, heads=heads)
