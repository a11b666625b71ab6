"""Import SigLIP2 vision weights from an open_clip model's timm trunk into an :class:`Encoder`.

open_clip's SigLIP2 models wrap a timm ``VisionTransformer`` (``model.visual.trunk``) with no
class token, ``global_pool='map'`` and an empty head. Parameters map one to one:

=============================  ==============================================================
timm trunk                     atoken encoder
=============================  ==============================================================
patch_embed.proj  conv         patch_embed.proj  linear; conv ``[C, c, p, p]`` is permuted to
``[C, c, p, p]``               the (ph, pw, c) value layout, then inflated into temporal slot 0
pos_embed ``[1, r*c, C]``      pos_table.weight ``[r, c, C]`` (row-major grid)
blocks.i.norm1/attn.qkv/...    transformer.blocks.i.* (same fused qkv layout: q, k, v chunks)
norm                           norm
attn_pool.latent ``[1,1,C]``   head.probe ``[1, C]``
attn_pool.q/kv/proj/norm/mlp   head.q/kv/proj/norm/mlp
=============================  ==============================================================

Nothing here imports timm or open_clip: the trunk is read through its attributes, and anything
this encoder cannot represent (class or register tokens, layer scale, a classifier head, a
pre-norm, qk-norm...) raises :class:`ConfigError` instead of being silently dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from atoken.core.config import BackboneConfig, EncoderConfig
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError

__all__ = ["encoder_config_from_timm", "find_timm_trunk", "load_timm_siglip"]


def find_timm_trunk(model: Any) -> nn.Module:
    """The timm ``VisionTransformer`` inside an open_clip model, its ``visual`` tower, or itself.

    Raises:
        ConfigError: when no ViT trunk is found or the tower adds layers after it.
    """
    visual = getattr(model, "visual", model)
    head = getattr(visual, "head", None)
    trunk = getattr(visual, "trunk", visual)
    if trunk is not visual and head is not None and len(list(head.children())):
        raise ConfigError(
            "the open_clip vision tower adds a projection head after its trunk "
            "(timm_proj != 'none'); only SigLIP-style towers with an empty head are supported"
        )
    for attr in ("patch_embed", "blocks", "pos_embed", "attn_pool"):
        if not hasattr(trunk, attr):
            raise ConfigError(f"not a timm VisionTransformer trunk: it has no {attr!r}")
    return trunk


def _activation(module: nn.Module) -> str:
    name = type(module).__name__
    if name == "GELUTanh" or getattr(module, "approximate", None) == "tanh":
        return "gelu_tanh"
    if name == "GELU":
        return "gelu"
    raise ConfigError(f"unsupported MLP activation {name}; expected GELU or GELU-tanh")


def _is_identity(module: Any) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _check_supported(trunk: nn.Module) -> None:
    problems = []
    if getattr(trunk, "cls_token", None) is not None:
        problems.append("a class token")
    if getattr(trunk, "reg_token", None) is not None:
        problems.append("register tokens")
    if getattr(trunk, "global_pool", "map") != "map" or trunk.attn_pool is None:
        problems.append(f"global_pool={getattr(trunk, 'global_pool', None)!r} (need 'map')")
    if trunk.pos_embed is None:
        problems.append("no learned position table")
    if not _is_identity(getattr(trunk, "norm_pre", None)):
        problems.append("a pre-norm")
    if not _is_identity(getattr(trunk, "fc_norm", None)) or not _is_identity(
        getattr(trunk, "head", None)
    ):
        problems.append("a classifier head or fc_norm")
    if not _is_identity(getattr(trunk.patch_embed, "norm", None)):
        problems.append("a patch-embedding norm")
    block = trunk.blocks[0]
    for attr in ("ls1", "ls2"):
        if not _is_identity(getattr(block, attr, None)):
            problems.append("layer scale")
            break
    if not _is_identity(getattr(block.attn, "q_norm", None)):
        problems.append("qk-norm")
    if not _is_identity(getattr(block.attn, "norm", None)):
        problems.append("an attention output norm")
    pool = trunk.attn_pool
    if getattr(pool, "latent_len", 1) != 1 or not _is_identity(getattr(pool, "q_norm", None)):
        problems.append("a MAP head with several latents or qk-norm")
    if getattr(pool, "pos_embed", None) is not None:
        problems.append("a MAP head position table")
    if problems:
        raise ConfigError(f"cannot import this timm ViT: it has {', '.join(problems)}")


def encoder_config_from_timm(trunk: nn.Module, **backbone_options: Any) -> EncoderConfig:
    """The :class:`EncoderConfig` that mirrors a SigLIP-style timm ViT trunk.

    Shape, norm epsilon, biases, activation, patch size and the native position grid are read
    from the trunk; ``backbone_options`` set the remaining :class:`BackboneConfig` fields
    (e.g. ``rope=False``). The temporal patch is 4 (images fill slot 0).

    Raises:
        ConfigError: for a trunk this encoder cannot represent.
    """
    _check_supported(trunk)
    block = trunk.blocks[0]
    proj = trunk.patch_embed.proj
    ph, pw = proj.kernel_size
    if ph != pw or tuple(proj.stride) != (ph, pw):
        raise ConfigError(f"patch embedding must be a square non-overlapping conv, got {proj}")
    width = proj.out_channels
    heads = block.attn.num_heads
    rows, cols = (int(g) for g in trunk.patch_embed.grid_size)
    if trunk.pos_embed.shape[1] != rows * cols:
        raise ConfigError(
            f"position table holds {trunk.pos_embed.shape[1]} entries for a {rows}x{cols} grid"
        )
    if trunk.attn_pool.num_heads != heads:
        raise ConfigError(
            f"MAP head has {trunk.attn_pool.num_heads} heads but the blocks have {heads}"
        )
    options = {
        "depth": len(trunk.blocks),
        "width": width,
        "heads": heads,
        "mlp_hidden": block.mlp.fc1.out_features,
        "norm": "layernorm",
        "norm_eps": float(block.norm1.eps),
        "bias": block.attn.qkv.bias is not None,
        "qk_norm": False,
        "act": _activation(block.mlp.act),
        "rope_pairs": "interleaved",
        "rope_frequencies": "atoken",
        "rope_axis_order": (0, 2, 1, 3),
    }
    options.update(backbone_options)
    return EncoderConfig(
        backbone=BackboneConfig(**options),
        patch_size=ph,
        temporal_patch=4,
        in_channels=proj.in_channels,
        pos_table=True,
        pos_grid=(rows, cols),
        final_norm=not _is_identity(trunk.norm),
        map_head=True,
        map_mlp_hidden=trunk.attn_pool.mlp.fc1.out_features,
    )


def _copy(dst: nn.Module, src: nn.Module, what: str) -> None:
    """Copy the parameters of ``src`` into ``dst`` (same names and shapes)."""
    src_state = src.state_dict()
    dst_state = dst.state_dict()
    if set(src_state) != set(dst_state):
        raise ConfigError(
            f"{what}: parameters {sorted(src_state)} do not match {sorted(dst_state)}"
        )
    for name, value in src_state.items():
        if dst_state[name].shape != value.shape:
            raise ConfigError(
                f"{what}.{name}: shape {tuple(value.shape)} does not fit "
                f"{tuple(dst_state[name].shape)}"
            )
    dst.load_state_dict(src_state)


@torch.no_grad()
def load_timm_siglip(encoder: Encoder, trunk: nn.Module) -> None:
    """Copy a SigLIP-style timm ViT trunk's weights into ``encoder`` (in place).

    The encoder must have the trunk's shape (build it from :func:`encoder_config_from_timm`).
    RoPE, when enabled, adds no parameters, so the same weights load with or without it.

    Raises:
        ConfigError: when the trunk is unsupported or a shape does not match.
    """
    _check_supported(trunk)
    conv = trunk.patch_embed.proj
    weight = conv.weight.permute(0, 2, 3, 1)  # [C, c, p, p] -> [C, p, p, c], the value layout
    encoder.patch_embed.load_2d(weight, conv.bias)
    if encoder.pos_table is None:
        raise ConfigError("the encoder has no position table (pos_table=False)")
    rows, cols = encoder.pos_table.grid
    table = trunk.pos_embed.reshape(rows, cols, -1)  # [1, rows*cols, C] -> [rows, cols, C]
    if table.shape != encoder.pos_table.weight.shape:
        raise ConfigError(
            f"pos_embed {tuple(table.shape)} does not fit {tuple(encoder.pos_table.weight.shape)}"
        )
    encoder.pos_table.weight.copy_(table)
    blocks = encoder.transformer.blocks
    if len(blocks) != len(trunk.blocks):
        raise ConfigError(f"encoder has {len(blocks)} blocks, the trunk {len(trunk.blocks)}")
    for i, (ours, theirs) in enumerate(zip(blocks, trunk.blocks, strict=True)):
        _copy(ours.norm1, theirs.norm1, f"blocks.{i}.norm1")
        _copy(ours.attn.qkv, theirs.attn.qkv, f"blocks.{i}.attn.qkv")
        _copy(ours.attn.proj, theirs.attn.proj, f"blocks.{i}.attn.proj")
        _copy(ours.norm2, theirs.norm2, f"blocks.{i}.norm2")
        _copy(ours.mlp.fc1, theirs.mlp.fc1, f"blocks.{i}.mlp.fc1")
        _copy(ours.mlp.fc2, theirs.mlp.fc2, f"blocks.{i}.mlp.fc2")
    _copy(encoder.norm, trunk.norm, "norm")
    if encoder.head is None:
        raise ConfigError("the encoder has no MAP head (map_head=False)")
    pool = trunk.attn_pool
    encoder.head.probe.copy_(pool.latent.reshape(1, -1))  # [1, 1, C] -> [1, C]
    for name in ("q", "kv", "proj", "norm", "mlp"):
        ours_mod = getattr(encoder.head, name)
        theirs_mod = getattr(pool, name)
        if name == "mlp":
            _copy(ours_mod.fc1, theirs_mod.fc1, "attn_pool.mlp.fc1")
            _copy(ours_mod.fc2, theirs_mod.fc2, "attn_pool.mlp.fc2")
        else:
            _copy(ours_mod, theirs_mod, f"attn_pool.{name}")
