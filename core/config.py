"""Model configurations (attrs, frozen, keyword-only) and the JSON presets in ``presets/``.

Three levels, each a frozen attrs class whose validators raise :class:`ConfigError`:

* :class:`BackboneConfig`: one transformer stack (depth, width, heads, MLP, norm, bias, qk-norm,
  activation, 4D RoPE options, gradient checkpointing). Encoder and decoder both use it.
* :class:`EncoderConfig`: the backbone plus the input side (patch size, patch embedding,
  learned 2D position table) and the output side (final norm, MAP pooling head).
* :class:`TokenizerConfig`: encoder, decoder, latent width, input normalisation, the
  attention backend name and the text encoder the semantic embedding is aligned to.

A preset is a JSON file ``presets/<name>.json`` holding ``TokenizerConfig.to_dict()``;
:func:`load_preset` reads it and :func:`preset_names` lists them. Overrides go through
:meth:`TokenizerConfig.with_overrides` (flat keys, see there); every unknown key is an error that
names the key, the section and close matches.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs

from atoken.core.errors import ConfigError
from atoken.core.validators import (
    as_json,
    as_tuple,
    float_triple,
    int_tuple,
    is_bool,
    name_map,
    non_negative_int,
    one_of,
    optional_name,
    optional_names,
    optional_positive_int,
    positive_float,
    positive_int,
)

__all__ = [
    "BackboneConfig",
    "EncoderConfig",
    "TokenizerConfig",
    "load_preset",
    "override_keys",
    "preset_names",
]

_PRESET_DIR = "presets"


# ------------------------------------------------------------------------------ configs
@attrs.frozen(kw_only=True)
class BackboneConfig:
    """One transformer stack.

    Attributes:
        depth, width, heads, mlp_hidden: layers, C, H and the MLP hidden width.
        norm: ``"layernorm"`` (SigLIP2, the encoder) or ``"rmsnorm"`` (the official decoder).
        norm_eps: epsilon of every norm (1e-6, SigLIP2's value).
        bias: biases in every linear layer and LayerNorm.
        qk_norm: per-head normalisation of q and k (the official decoder).
        qk_norm_per_head: the qk-norm has one gain per head and channel (``[H, D]``) and is
            ``F.normalize(x) * gain * sqrt(D)`` with no epsilon inside, as the official
            release's ``SparseMultiHeadRMSNorm``; False: one RMSNorm gain ``[D]`` shared by
            the heads.
        act: MLP activation, ``"gelu_tanh"`` or ``"gelu"`` (exact; timm's SigLIP-B uses it).
        rope: 4D RoPE in every attention layer.
        rope_pairs, rope_frequencies, rope_theta, rope_axis_order: see
            :class:`atoken.core.rope.Rope4D` (``"interleaved"``/``"atoken"`` is the official
            setting, ``"half"``/``"axial"`` the standard one).
        grad_checkpointing: recompute blocks in the backward pass.
    """

    depth: int = attrs.field(validator=positive_int)
    width: int = attrs.field(validator=positive_int)
    heads: int = attrs.field(validator=positive_int)
    mlp_hidden: int = attrs.field(validator=positive_int)
    norm: str = attrs.field(default="layernorm", validator=one_of("layernorm", "rmsnorm"))
    norm_eps: float = attrs.field(default=1e-6, validator=positive_float)
    bias: bool = attrs.field(default=True, validator=is_bool)
    qk_norm: bool = attrs.field(default=False, validator=is_bool)
    qk_norm_per_head: bool = attrs.field(default=False, validator=is_bool)
    act: str = attrs.field(default="gelu_tanh", validator=one_of("gelu_tanh", "gelu"))
    rope: bool = attrs.field(default=True, validator=is_bool)
    rope_pairs: str = attrs.field(default="interleaved", validator=one_of("interleaved", "half"))
    rope_frequencies: str = attrs.field(default="atoken", validator=one_of("atoken", "axial"))
    rope_theta: float = attrs.field(default=10000.0, validator=positive_float)
    rope_axis_order: tuple[int, ...] = attrs.field(
        default=(0, 1, 2, 3), converter=as_tuple, validator=int_tuple(4)
    )
    grad_checkpointing: bool = attrs.field(default=False, validator=is_bool)

    def __attrs_post_init__(self) -> None:
        if self.width % self.heads:
            raise ConfigError(
                f"BackboneConfig: width {self.width} is not a multiple of heads {self.heads}"
            )
        if self.rope and self.head_dim % 8:
            raise ConfigError(
                f"BackboneConfig: 4D RoPE needs a head dimension that is a multiple of 8, got "
                f"{self.head_dim} (width {self.width} / heads {self.heads}); set rope=False or "
                "change the heads"
            )
        if sorted(self.rope_axis_order) != [0, 1, 2, 3]:
            raise ConfigError(
                "BackboneConfig.rope_axis_order must permute (0, 1, 2, 3), "
                f"got {self.rope_axis_order}"
            )
        if self.rope_theta <= 1:
            raise ConfigError(f"BackboneConfig.rope_theta must be > 1, got {self.rope_theta}")

    @property
    def head_dim(self) -> int:
        """D = width / heads."""
        return self.width // self.heads


@attrs.frozen(kw_only=True)
class EncoderConfig:
    """The encoder: patch embedding, position, backbone, final norm and MAP head.

    Attributes:
        backbone: the transformer stack.
        patch_size, temporal_patch, in_channels: one token holds
            ``temporal_patch * patch_size * patch_size * in_channels`` values (4 x 16 x 16 x 3).
        pos_table: add the learned 2D position table, resized to each sample's grid.
        pos_grid: the table's native (rows, cols) grid (SigLIP2: 16 x 16 at 256 px).
        final_norm: normalise the tokens after the last block (SigLIP2 does).
        map_head: build the attention-pooling head that gives the semantic embedding.
        map_mlp_hidden: the MAP head's MLP width (None: the backbone's ``mlp_hidden``).
    """

    backbone: BackboneConfig = attrs.field()
    patch_size: int = attrs.field(default=16, validator=positive_int)
    temporal_patch: int = attrs.field(default=4, validator=positive_int)
    in_channels: int = attrs.field(default=3, validator=positive_int)
    pos_table: bool = attrs.field(default=True, validator=is_bool)
    pos_grid: tuple[int, ...] = attrs.field(
        default=(16, 16), converter=as_tuple, validator=int_tuple(2)
    )
    final_norm: bool = attrs.field(default=True, validator=is_bool)
    map_head: bool = attrs.field(default=True, validator=is_bool)
    map_mlp_hidden: int | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneConfig):
            raise ConfigError(
                "EncoderConfig.backbone must be a BackboneConfig, "
                f"got {type(self.backbone).__name__}"
            )
        if min(self.pos_grid) < 1:
            raise ConfigError(f"EncoderConfig.pos_grid must be positive, got {self.pos_grid}")
        hidden = self.map_mlp_hidden
        if hidden is not None and (
            isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1
        ):
            raise ConfigError(
                f"EncoderConfig.map_mlp_hidden must be a positive int, got {hidden!r}"
            )

    @property
    def patch_dim(self) -> int:
        """Values per token: ``temporal_patch * patch_size**2 * in_channels``."""
        return self.temporal_patch * self.patch_size * self.patch_size * self.in_channels


@attrs.frozen(kw_only=True)
class TokenizerConfig:
    """The whole tokenizer.

    Attributes:
        name: the preset name (informational).
        encoder: the encoder.
        decoder: the decoder stack (None until a decoder is wanted).
        latent_dim: channels of the latent (32 in stage 1, 48 later).
        input_mean, input_std: per-channel normalisation of [0, 1] inputs (SigLIP2: 0.5, 0.5).
        attention: the attention backend name; None picks the best for the device
            (:func:`atoken.core.attention.default_attention_backend`).
        bottleneck: the registered bottleneck between encoder and decoder (``kl``, ``fsq``).
        bottleneck_params: its extra parameters (e.g. ``{"levels": [4, 4, 4, 4, 4, 4],
            "groups": 8}`` for FSQ).
        head: the registered decoder output head (``pixels``).
        decoder_final_norm: normalise the decoder's tokens before the head (the official
            decoder does; the override key is ``decoder_final_norm``).
        decoder_pos_table: add the learned 2D position table (``encoder.pos_grid``, resized to
            each sample's grid) to the decoder's input, as the official decoder does (its
            ``decoder.pos_embedder``); it applies to every sample the decoder reads.
        text_encoder: the registered text encoder whose space the semantic embedding is
            projected to (``minilm``, ``open_clip``); None: no text alignment.
        text_encoder_params: its parameters (e.g. ``{"pretrained": "/path/model.safetensors"}``;
            ``{"trainable": true}`` trains the tower, which is otherwise frozen and not saved).
        modalities: the modalities the tokenizer is built for, exactly (whatever plugins are
            installed): their own projections and heads exist from construction (before any
            optimizer or distributed wrap). Each preset names its own; None: the modalities
            atoken ships (:func:`atoken.factory.builtin_modalities`); the built tokenizer
            records the resolved list (``config.json`` keeps it).
        modality_params: per modality, the parameters its factory gets on top of the encoder
            arguments (:data:`atoken.core.modality.ENCODER_ARGUMENTS`), e.g.
            ``{"depth": {"max_tokens": 4096}}``.
        default_modality: the modality of raw samples when a call names none (None: the
            built-in default, :data:`atoken.modalities.DEFAULT_MODALITY`).
        heads: per modality, the registered head that decodes it (default: the modality's
            ``default_head``, else ``head``).
        head_params: per modality, extra parameters of its head factory.
        tile_steps: latent time steps per temporal tile: a sample whose coordinates span more
            time steps is encoded and decoded tile by tile, so memory is bounded by a tile
            (4 steps = 16 frames, the official setting); None: never tile.
        kv_cache_steps: latent steps of keys and values the decoder keeps across tiles
            (0: independent tiles).
    """

    name: str = attrs.field(default="custom")
    encoder: EncoderConfig = attrs.field()
    decoder: BackboneConfig | None = attrs.field(default=None)
    latent_dim: int = attrs.field(default=48, validator=positive_int)
    input_mean: tuple[float, ...] = attrs.field(
        default=(0.5, 0.5, 0.5), converter=as_tuple, validator=float_triple
    )
    input_std: tuple[float, ...] = attrs.field(
        default=(0.5, 0.5, 0.5), converter=as_tuple, validator=float_triple
    )
    attention: str | None = attrs.field(default=None)
    bottleneck: str = attrs.field(default="kl")
    bottleneck_params: Mapping[str, Any] = attrs.field(factory=dict)
    head: str = attrs.field(default="pixels")
    decoder_final_norm: bool = attrs.field(default=True, validator=is_bool)
    decoder_pos_table: bool = attrs.field(default=False, validator=is_bool)
    text_encoder: str | None = attrs.field(default=None)
    text_encoder_params: Mapping[str, Any] = attrs.field(factory=dict)
    modalities: tuple[str, ...] | None = attrs.field(
        default=None, converter=as_tuple, validator=optional_names
    )
    modality_params: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=as_json, validator=name_map(Mapping)
    )
    default_modality: str | None = attrs.field(default=None, validator=optional_name)
    heads: Mapping[str, str] = attrs.field(factory=dict, validator=name_map(str))
    head_params: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=as_json, validator=name_map(Mapping)
    )
    tile_steps: int | None = attrs.field(default=4, validator=optional_positive_int)
    kv_cache_steps: int = attrs.field(default=4, validator=non_negative_int)

    def __attrs_post_init__(self) -> None:
        if self.text_encoder is not None and (
            not isinstance(self.text_encoder, str) or not self.text_encoder
        ):
            raise ConfigError(
                "TokenizerConfig.text_encoder must be a component name or None, "
                f"got {self.text_encoder!r}"
            )
        if not isinstance(self.text_encoder_params, Mapping):
            raise ConfigError(
                "TokenizerConfig.text_encoder_params must be a mapping, "
                f"got {self.text_encoder_params!r}"
            )
        for key in ("bottleneck", "head"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"TokenizerConfig.{key} must be a component name, got {value!r}")
        if not isinstance(self.bottleneck_params, Mapping):
            raise ConfigError(
                "TokenizerConfig.bottleneck_params must be a mapping, "
                f"got {self.bottleneck_params!r}"
            )
        if not isinstance(self.encoder, EncoderConfig):
            raise ConfigError(
                "TokenizerConfig.encoder must be an EncoderConfig, "
                f"got {type(self.encoder).__name__}"
            )
        if self.decoder is not None and not isinstance(self.decoder, BackboneConfig):
            raise ConfigError(
                f"TokenizerConfig.decoder must be a BackboneConfig or None, got "
                f"{type(self.decoder).__name__}"
            )
        if self.decoder_pos_table and self.decoder is None:
            raise ConfigError("TokenizerConfig.decoder_pos_table needs a decoder")
        if any(s <= 0 for s in self.input_std):
            raise ConfigError(f"TokenizerConfig.input_std must be positive, got {self.input_std}")
        if self.attention is not None and (
            not isinstance(self.attention, str) or not self.attention
        ):
            raise ConfigError(
                f"TokenizerConfig.attention must be a backend name or None, got {self.attention!r}"
            )

    # -------------------------------------------------------------------------- dict form
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); :meth:`from_dict` inverts it."""
        return json.loads(json.dumps(attrs.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerConfig:
        """Structure a nested dict; every unknown key raises ``ConfigError`` naming its section.

        Raises:
            ConfigError: for unknown or missing keys and invalid values.
        """
        top = _check_keys(data, cls, "tokenizer")
        encoder = _check_keys(
            _mapping(top.pop("encoder", None), "encoder"), EncoderConfig, "encoder"
        )
        encoder["backbone"] = _build(
            BackboneConfig,
            _check_keys(
                _mapping(encoder.get("backbone"), "encoder.backbone"),
                BackboneConfig,
                "encoder.backbone",
            ),
            "encoder.backbone",
        )
        top["encoder"] = _build(EncoderConfig, encoder, "encoder")
        decoder = top.pop("decoder", None)
        if decoder is not None:
            decoder = _build(
                BackboneConfig,
                _check_keys(_mapping(decoder, "decoder"), BackboneConfig, "decoder"),
                "decoder",
            )
        top["decoder"] = decoder
        return _build(cls, top, "tokenizer")

    def with_overrides(self, **overrides: Any) -> TokenizerConfig:
        """A copy with flat overrides applied (``attrs.evolve`` at the right level).

        A key that names a field of :class:`TokenizerConfig` sets it; a field of
        :class:`EncoderConfig` or :class:`BackboneConfig` sets it on the encoder (so ``rope=False``
        turns RoPE off in the encoder); ``decoder_<field>`` sets a decoder backbone field
        (:func:`override_keys` lists them all).

        Raises:
            ConfigError: for an unknown key (with close matches) or an invalid value.
        """
        top: dict[str, Any] = {}
        enc: dict[str, Any] = {}
        enc_bb: dict[str, Any] = {}
        dec_bb: dict[str, Any] = {}
        top_fields, enc_fields, bb_fields = _flat_fields()
        for key, value in overrides.items():
            if key in top_fields:
                top[key] = value
            elif key in enc_fields:
                enc[key] = value
            elif key in bb_fields:
                enc_bb[key] = value
            elif key.startswith("decoder_") and key[len("decoder_") :] in bb_fields:
                dec_bb[key[len("decoder_") :]] = value
            else:
                raise ConfigError(_unknown_message(key, "overrides", sorted(override_keys())))
        if dec_bb and self.decoder is None:
            raise ConfigError(f"cannot override {sorted(dec_bb)}: this config has no decoder")
        encoder = self.encoder
        if enc_bb:
            encoder = _evolve(encoder, backbone=_evolve(encoder.backbone, **enc_bb))
        if enc:
            encoder = _evolve(encoder, **enc)
        decoder = _evolve(self.decoder, **dec_bb) if dec_bb else self.decoder
        return _evolve(self, encoder=encoder, decoder=decoder, **top)


# ------------------------------------------------------------------------------ helpers
def _unknown_message(key: str, section: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown key {key!r} in section {section!r}.{hint} Known keys: {', '.join(known)}."


def _mapping(value: Any, section: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"section {section!r} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _check_keys(data: Mapping[str, Any], cls: type, section: str) -> dict[str, Any]:
    items = _mapping(data, section)
    known = sorted(f.name for f in attrs.fields(cls))
    for key in items:
        if key not in known:
            raise ConfigError(_unknown_message(str(key), section, known))
    return items


def _build(cls: type, kwargs: dict[str, Any], section: str) -> Any:
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required key
        raise ConfigError(f"section {section!r}: {exc}") from exc


def _evolve(inst: Any, **changes: Any) -> Any:
    try:
        return attrs.evolve(inst, **changes)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def override_keys() -> frozenset[str]:
    """Every flat key :meth:`TokenizerConfig.with_overrides` takes (a run file's ``[model]``
    keys besides its own): the config's fields, the encoder's and its backbone's, and
    ``decoder_<backbone field>``."""
    top, enc, bb = _flat_fields()
    return frozenset(top | enc | bb | {f"decoder_{f}" for f in bb})


def _flat_fields() -> tuple[set[str], set[str], set[str]]:
    """The field names a flat override may set: the config's, the encoder's, a backbone's."""
    top = {f.name for f in attrs.fields(TokenizerConfig)} - {"encoder", "decoder"}
    enc = {f.name for f in attrs.fields(EncoderConfig)} - {"backbone"}
    return top, enc, {f.name for f in attrs.fields(BackboneConfig)}


def preset_names() -> list[str]:
    """Names of the bundled presets (``tiny``, ``small``, ``base``, ``so400m``, ``atoken-so``)."""
    folder = resources.files("atoken.core") / _PRESET_DIR
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> TokenizerConfig:
    """The :class:`TokenizerConfig` stored in ``presets/<name>.json``.

    Raises:
        ConfigError: for an unknown preset name (with close matches) or an invalid file.
    """
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}.{hint} Available: {', '.join(names)}.")
    text = (resources.files("atoken.core") / _PRESET_DIR / f"{name}.json").read_text("utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"preset {name!r} is not valid JSON: {exc}") from exc
    return TokenizerConfig.from_dict(data)
