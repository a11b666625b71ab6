"""Official AToken checkpoints -> atoken tokenizers and ``save_pretrained`` folders.

    tok = Tokenizer.from_official("atoken-sod.pt", "configs/atoken-sod.yaml")

A checkpoint is a flat state dict (no wrapper, no prefix), a ``.pt`` file read with
``torch.load(weights_only=True)`` (nothing else is ever unpickled) or a ``.safetensors`` file.
The mapping is strict: every official key fills one atoken parameter of the right shape and
every atoken parameter is filled, else :class:`~atoken.core.errors.StateDictMismatchError`
lists the missing, unexpected and wrong-shape keys. Stored values are copied as they are
(a bf16 checkpoint is upcast to the model's float32 without change); NaN or infinite values
are kept too, with a :class:`~atoken.core.errors.NonFiniteWeightsWarning` naming the tensors.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from atoken.core.config import TokenizerConfig
from atoken.core.errors import ConfigError, NonFiniteWeightsWarning
from atoken.official.config import infer_config, read_official_yaml, with_official_inputs
from atoken.official.state_dict import (
    convert_state_dict,
    load_official_state_dict,
    nonfinite_tensors,
)
from atoken.official.zeroshot import official_semantic_state, official_text_encoder

__all__ = [
    "convert_state_dict",
    "from_official",
    "load_official_state_dict",
    "nonfinite_tensors",
]

_NAMED = 5  # tensors a warning names


def _config_for(
    state: Mapping[str, torch.Tensor], config: Any, options: dict[str, Any]
) -> TokenizerConfig:
    if isinstance(config, TokenizerConfig):
        if options:
            raise ConfigError(f"{sorted(options)} do not apply to a ready TokenizerConfig")
        return config
    if config is None or isinstance(config, Mapping):
        return infer_config(state, config, **options)
    if isinstance(config, (str, os.PathLike)):
        return infer_config(state, read_official_yaml(config), **options)
    raise ConfigError(
        "config must be an official YAML path, its arch_cfg mapping, a TokenizerConfig or "
        f"None, got {type(config).__name__}"
    )


def from_official(
    cls: type,
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    config: Any = None,
    **options: Any,
) -> Any:
    """A ``cls`` (:class:`atoken.Tokenizer`) holding an official checkpoint's weights.

    Args:
        checkpoint: a ``.pt``/``.safetensors`` path, or the state dict itself.
        config: the official YAML path (``configs/atoken-sod.yaml``), its ``arch_cfg``
            mapping, a ready :class:`TokenizerConfig`, or None (shapes only: So/C unless
            ``fsq=True``).
        options: ``heads``, ``decoder_heads``, ``fsq``, ``modalities``
            (:func:`atoken.official.config.infer_config`); ``text_tower`` (a local open_clip
            checkpoint of the SigLIP2-So400m text tower), with ``text_tokenizer`` (its Hugging
            Face tokenizer folder, default the checkpoint's) and ``text_model`` (default
            ``ViT-SO400M-16-SigLIP2-naflex``): the tokenizer gets that text encoder, W_s =
            identity and the official logit scale and bias (:mod:`atoken.official.zeroshot`);
            ``gaussian_decoder`` (``3d_decode_gs.pt``, its state dict, a folder ``atoken
            convert`` wrote, or a loaded decoder), with ``gaussian_config`` (its YAML): the
            tokenizer gets the 3D modality, decoded to Gaussians by the official Gaussian
            decoder (:mod:`atoken.official.gaussian_head`).

    Every modality reads its samples as the official release does (its ``official_params``,
    :func:`atoken.official.config.with_official_inputs`: the mesh modality packs 3D assets by
    the official rule), unless the config's ``modality_params`` say otherwise.

    Raises:
        CheckpointError: an unreadable checkpoint.
        ConfigError: shapes the converter cannot represent, or a YAML that disagrees.
        StateDictMismatchError: keys that do not map one to one.

    Warns:
        NonFiniteWeightsWarning: tensors holding NaN or infinite values (named; converted as
            they are).
    """
    if isinstance(checkpoint, Mapping):
        state, source = dict(checkpoint), "official state dict"
    else:
        state, source = load_official_state_dict(checkpoint), str(checkpoint)
    bad = nonfinite_tensors(state)
    if bad:
        more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
        warnings.warn(
            f"{source}: {len(bad)} of {len(state)} tensors hold NaN or infinite values: "
            f"{', '.join(bad[:_NAMED])}{more}; the converted tokenizer computes NaN wherever "
            "they reach (a damaged or diverged checkpoint?)",
            NonFiniteWeightsWarning,
            stacklevel=3,
        )
    text = _text_options(options)
    gaussian = _gaussian_options(options)
    cfg = _config_for(state, config, options)
    if text is not None:
        name, params = official_text_encoder(**text)
        cfg = cfg.with_overrides(text_encoder=name, text_encoder_params=params)
    extra: dict[str, torch.Tensor] = {}
    if gaussian is not None:
        from atoken.official import gaussian_head

        decoder = gaussian_head.read_gaussian_decoder(*gaussian)
        cfg = gaussian_head.with_gaussian_head(cfg, decoder)
        extra = gaussian_head.gaussian_head_state(state, decoder, source=source)
    cfg = with_official_inputs(cfg)
    model = cls(cfg)
    expected = {
        k: v.shape
        for k, v in model.state_dict().items()
        if not k.startswith("semantic.") and k not in extra
    }
    mapped = convert_state_dict(state, expected, source=source)
    mapped.update(extra)
    if model.semantic is not None:
        width = cfg.encoder.backbone.width
        if model.semantic.proj.weight.shape != (width, width):
            raise ConfigError(
                f"the text tower gives {model.semantic.proj.weight.shape[0]}-d embeddings, the "
                f"official image embedding is {width}-d: the official model pairs with "
                "SigLIP2-So400m's text tower (1152-d)"
            )
        mapped.update(official_semantic_state(width))
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _gaussian_options(options: dict[str, Any]) -> tuple[Any, Any] | None:
    """Pops ``gaussian_decoder``, ``gaussian_config`` from ``options``."""
    decoder = options.pop("gaussian_decoder", None)
    config = options.pop("gaussian_config", None)
    if decoder is None:
        if config is not None:
            raise ConfigError("gaussian_config needs gaussian_decoder")
        return None
    return decoder, config


def _text_options(options: dict[str, Any]) -> dict[str, Any] | None:
    """Pops ``text_tower``, ``text_tokenizer``, ``text_model`` from ``options``."""
    tower = options.pop("text_tower", None)
    tokenizer = options.pop("text_tokenizer", None)
    model = options.pop("text_model", None)
    if tower is None:
        if tokenizer is not None or model is not None:
            raise ConfigError("text_tokenizer and text_model need text_tower")
        return None
    out: dict[str, Any] = {"text_tower": tower, "tokenizer": tokenizer}
    if model is not None:
        out["model_name"] = model
    return out
