"""The official AToken state-dict keys and how each maps to an atoken parameter.

Shapes (official, torch ``[out, in]``; C encoder width, C' decoder width, L latent, G the
position grid side, 16 at release, P = 3072 values per 4 x 16 x 16 x 3 patch):

    encoder.pos_embedder.position_embedding.weight [G*G, C]  -> encoder.pos_table.weight [G, G, C]
    encoder.input_layer.{weight,bias}              [C, P]    -> encoder.patch_embed.proj.*
    encoder.blocks.{i}.norm{1,2}.{weight,bias}     [C]       -> encoder.transformer.blocks.{i}.*
    encoder.blocks.{i}.attn.to_qkv.*               [3C, C]   -> ...attn.qkv.*  (3, H, D) rows
    encoder.blocks.{i}.attn.to_out.*               [C, C]    -> ...attn.proj.*
    encoder.blocks.{i}.mlp.mlp.{0,2}.*                       -> ...mlp.fc{1,2}.*
    encoder.post_layernorm.*                       [C]       -> encoder.norm.*
    encoder.head.probe                             [C]       -> encoder.head.probe [1, C]
    encoder.head.attention.to_{q,kv,out}.*                   -> encoder.head.{q,kv,proj}.*
    encoder.head.layernorm.*                                 -> encoder.head.norm.*
    encoder.head.mlp.mlp.{0,2}.*                             -> encoder.head.mlp.fc{1,2}.*
    proj.weight                                    [2L, C]   -> bottleneck.proj.weight
                                                                ([mean | logvar] rows)
    decoder.pos_embedder.position_embedding.weight [G*G, C'] -> decoder.pos_table.weight
    decoder.input_layer.weight                     [C', L]   -> decoder.in_proj.weight
    decoder.blocks.{i}.attn.{q,k}_rms_norm.gamma   [H, D]    -> ...attn.{q,k}_norm.weight
    decoder.blocks.{i}.*  (as the encoder's blocks)          -> decoder.transformer.blocks.{i}.*
    decoder.out_norm.weight                        [C']      -> decoder.norm.weight
    decoder.out_layer.weight                       [P, C']   -> head.proj.weight

The position table is stored flat, row-major over (row, column): row ``r``, column ``c`` is
entry ``r * G + c``, so it reshapes to atoken's ``[rows, cols, C]`` table as is (the official
code reads it at (x, y) with x the row; atoken reads it at (y, x) with y the row).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch

from atoken.core.errors import ConfigError

__all__ = ["BLOCK_RULES", "TOP_RULES", "atoken_key", "official_key", "to_atoken", "to_official"]

#: Inside a block (``{encoder,decoder}.blocks.{i}.`` prefix): official suffix -> atoken suffix.
BLOCK_RULES: tuple[tuple[str, str], ...] = (
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
    ("attn.to_qkv.", "attn.qkv."),
    ("attn.to_out.", "attn.proj."),
    ("attn.q_rms_norm.gamma", "attn.q_norm.weight"),
    ("attn.k_rms_norm.gamma", "attn.k_norm.weight"),
    ("mlp.mlp.0.", "mlp.fc1."),
    ("mlp.mlp.2.", "mlp.fc2."),
)

#: Outside the blocks: official prefix -> atoken prefix (a trailing ``.`` maps weight and bias).
TOP_RULES: tuple[tuple[str, str], ...] = (
    ("encoder.pos_embedder.position_embedding.weight", "encoder.pos_table.weight"),
    ("encoder.input_layer.", "encoder.patch_embed.proj."),
    ("encoder.post_layernorm.", "encoder.norm."),
    ("encoder.head.probe", "encoder.head.probe"),
    ("encoder.head.attention.to_q.", "encoder.head.q."),
    ("encoder.head.attention.to_kv.", "encoder.head.kv."),
    ("encoder.head.attention.to_out.", "encoder.head.proj."),
    ("encoder.head.layernorm.", "encoder.head.norm."),
    ("encoder.head.mlp.mlp.0.", "encoder.head.mlp.fc1."),
    ("encoder.head.mlp.mlp.2.", "encoder.head.mlp.fc2."),
    ("proj.weight", "bottleneck.proj.weight"),
    ("decoder.pos_embedder.position_embedding.weight", "decoder.pos_table.weight"),
    ("decoder.input_layer.", "decoder.in_proj."),
    ("decoder.out_norm.", "decoder.norm."),
    ("decoder.out_layer.", "head.proj."),
)

_OFFICIAL_BLOCK = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")
_ATOKEN_BLOCK = re.compile(r"^(encoder|decoder)\.transformer\.blocks\.(\d+)\.(.+)$")


def _swap(key: str, rules: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for official, ours in rules:
        src, dst = (ours, official) if reverse else (official, ours)
        if src.endswith("."):
            if key.startswith(src) and key.count(".") == src.count("."):
                return dst + key[len(src) :]
        elif key == src:
            return dst
    return None


def _map_key(key: str, reverse: bool) -> str | None:
    block = (_ATOKEN_BLOCK if reverse else _OFFICIAL_BLOCK).match(key)
    if block:
        part, index, rest = block.groups()
        inner = _swap(rest, BLOCK_RULES, reverse)
        blocks = "blocks" if reverse else "transformer.blocks"
        return None if inner is None else f"{part}.{blocks}.{index}.{inner}"
    return _swap(key, TOP_RULES, reverse)


def atoken_key(key: str) -> str | None:
    """The atoken parameter an official key fills (None: the key is not in the table)."""
    return _map_key(key, reverse=False)


def official_key(key: str) -> str | None:
    """The official key of an atoken parameter (None: it has no official counterpart)."""
    return _map_key(key, reverse=True)


def _table_to_grid(t: torch.Tensor) -> torch.Tensor:
    side = math.isqrt(t.shape[0])
    if t.ndim != 2 or side * side != t.shape[0]:
        raise ConfigError(
            f"the official position table must be [G*G, C] with a square grid, got {tuple(t.shape)}"
        )
    return t.reshape(side, side, t.shape[1])  # [G, G, C]: (row, column) row-major


def _value_map(key: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if key.endswith("pos_embedder.position_embedding.weight"):
        return _table_to_grid
    if key == "encoder.head.probe":
        return lambda t: t.reshape(1, -1)  # [C] -> [1, C]
    return lambda t: t


def to_atoken(key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
    """``(atoken key, value in atoken's layout)`` of one official entry (key None: unknown)."""
    ours = atoken_key(key)
    return ours, (value if ours is None else _value_map(key)(value))


def to_official(key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
    """The inverse of :func:`to_atoken`: an atoken entry in the official key and layout."""
    theirs = official_key(key)
    if theirs is None:
        return None, value
    if theirs.endswith("pos_embedder.position_embedding.weight"):
        return theirs, value.reshape(-1, value.shape[-1])  # [G, G, C] -> [G*G, C]
    if theirs == "encoder.head.probe":
        return theirs, value.reshape(-1)  # [1, C] -> [C]
    return theirs, value
