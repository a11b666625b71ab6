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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from atoken.core.config import TokenizerConfig
from atoken.core.errors import ConfigError, NonFiniteWeightsWarning, StateDictMismatchError
from atoken.engine.checkpoint import CheckpointError
from atoken.official.config import infer_config, read_official_yaml
from atoken.official.keys import to_atoken
from atoken.official.zeroshot import official_semantic_state, official_text_encoder

__all__ = [
    "convert_state_dict",
    "from_official",
    "load_official_state_dict",
    "nonfinite_tensors",
]

_WRAPPERS = ("state_dict", "model", "module", "ema")
_NAMED = 5  # tensors a warning names


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``state`` holding NaN or +-inf, sorted
    (tensors on the meta device hold no values and are skipped)."""
    return sorted(
        name
        for name, value in state.items()
        if torch.is_tensor(value)
        and value.is_floating_point()
        and value.device.type != "meta"
        and not bool(torch.isfinite(value).all())
    )


def load_official_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The flat state dict in ``path`` (``.safetensors``, else a ``.pt``/``.pth`` file read with
    ``torch.load(weights_only=True)`` on the CPU).

    Raises:
        CheckpointError: a missing or unreadable file, or one that is not a flat mapping of
            names to tensors (a wrapped training checkpoint is named as such).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    wrapped = [k for k in _WRAPPERS if isinstance(state.get(k), Mapping)]
    if wrapped:
        raise CheckpointError(
            f"{path}: a wrapped checkpoint (key {wrapped[0]!r} holds the weights); the "
            f"official files are flat state dicts: save state[{wrapped[0]!r}] alone"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}")
    return dict(state)


def convert_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    *,
    source: str = "official state dict",
    mapper: Callable[[str, torch.Tensor], tuple[str | None, torch.Tensor]] = to_atoken,
) -> dict[str, torch.Tensor]:
    """Map an official state dict to atoken keys and layouts, strictly.

    Args:
        state: the official keys and tensors.
        expected: atoken key -> shape of every parameter and persistent buffer to fill
            (``{k: v.shape for k, v in model.state_dict().items()}``).
        source: named in the error.
        mapper: ``(official key, value) -> (atoken key or None, value)``: the tokenizer's
            table (:func:`atoken.official.keys.to_atoken`) unless another model is filled.

    Raises:
        StateDictMismatchError: listing official keys with no atoken parameter
            (``unexpected``), atoken parameters no key fills (``missing``), and keys whose
            shape differs (``wrong_shape``, official key with the expected and found shapes).
    """
    out: dict[str, torch.Tensor] = {}
    unexpected, wrong, wrong_targets = [], [], set()
    for key, value in state.items():
        ours, mapped = mapper(key, value)
        if ours is None or ours not in expected:
            unexpected.append(key)
            continue
        want = tuple(expected[ours])
        if tuple(mapped.shape) != want:
            wrong.append((key, want, tuple(mapped.shape)))
            wrong_targets.add(ours)
            continue
        out[ours] = mapped
    missing = [k for k in expected if k not in out and k not in wrong_targets]
    if unexpected or missing or wrong:
        raise StateDictMismatchError(
            source, missing=missing, unexpected=unexpected, wrong_shape=wrong
        )
    return out


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
            identity and the official logit scale and bias (:mod:`atoken.official.zeroshot`).

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
    cfg = _config_for(state, config, options)
    if text is not None:
        name, params = official_text_encoder(**text)
        cfg = cfg.with_overrides(text_encoder=name, text_encoder_params=params)
    model = cls(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("semantic.")}
    mapped = convert_state_dict(state, expected, source=source)
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
