"""The official 3D Gaussian decoder (``3d_decode_gs.pt`` + ``configs/3d_decode_gs.yaml``) as an
atoken :class:`~atoken.modalities.mesh.swin_decoder.SwinGaussianDecoder`, on any device.

    dec = load_gaussian_decoder("3d_decode_gs.pt", "configs/3d_decode_gs.yaml")
    raw = dec(feats, coords)              # feats [N, 768], coords int32 [N, 4] -> [N, 448]
    sets = dec.to_gaussians(raw, coords)  # one GaussianSet per sample

The checkpoint is a flat state dict (class ``SLatGaussianDecoderTrain``, no prefix, 76 tensors
at release), read like the tokenizer checkpoints (:func:`~atoken.official.state_dict.
load_official_state_dict`: ``torch.load(weights_only=True)`` or ``.safetensors``). Keys
(official -> atoken; C width, F input features, M MLP width, K Gaussians per voxel):

    input_layer.weight                   [C, F]      -> in_proj.weight
    blocks.{i}.norm{1,2}.weight          [C]         -> blocks.{i}.norm{1,2}.weight
    blocks.{i}.attn.to_qkv.weight        [3C, C]     -> blocks.{i}.attn.qkv.weight
    blocks.{i}.attn.to_out.weight        [C, C]      -> blocks.{i}.attn.proj.weight
    blocks.{i}.attn.{q,k}_rms_norm.gamma [H, C/H]    -> blocks.{i}.attn.{q,k}_norm.weight
                                                        (only with ``qk_rms_norm: true``)
    blocks.{i}.mlp.mlp.{0,2}.weight      [M, C]/[C, M] -> blocks.{i}.mlp.fc{1,2}.weight
    out_layer.{weight,bias}              [14K, C]/[14K] -> out_proj.*
    offset_perturbation                  [K, 3]      -> offset_perturbation (persistent buffer)

The mapping is strict (:class:`~atoken.core.errors.StateDictMismatchError` lists missing,
unexpected and wrong-shape keys), except for the training-only modules the training class
creates (``lpips_loss.*``, ``ssim_loss.*``, ``get_psnr.*``: its LPIPS network and metric
states), which are left out.

Sizes come from the shapes; the YAML (``model:`` mapping) gives the heads (``num_heads``, else
``model_channels // num_head_channels``, 64 per head), the window, the grid resolution and
the representation constants, and is checked against the shapes.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from atoken.core.errors import ConfigError, StateDictMismatchError
from atoken.engine.checkpoint import CheckpointError
from atoken.modalities.mesh.swin_decoder import SwinGaussianDecoder
from atoken.official.keys import BLOCK_RULES
from atoken.official.state_dict import convert_state_dict, load_official_state_dict

__all__ = [
    "CONFIG_OPTIONS",
    "FOLDER_CONFIG",
    "FOLDER_FORMAT",
    "FOLDER_WEIGHTS",
    "OFFICIAL_SOFTCAP",
    "TRAINING_ONLY_PREFIXES",
    "gaussian_decoder_config",
    "gaussian_decoder_key",
    "gaussian_decoder_options",
    "load_gaussian_decoder",
    "read_gaussian_yaml",
]

#: The logit cap of the official windowed attention under flash-attn, its default backend.
OFFICIAL_SOFTCAP = 30.0
#: A converted folder: its config (format, options) and its weights (atoken keys).
FOLDER_CONFIG, FOLDER_WEIGHTS = "gaussian_decoder.json", "gaussian_decoder.safetensors"
FOLDER_FORMAT = "atoken-gaussian-decoder"
#: Prefixes of the training-only modules of ``SLatGaussianDecoderTrain`` (no inference use).
TRAINING_ONLY_PREFIXES: tuple[str, ...] = ("lpips_loss.", "ssim_loss.", "get_psnr.")

_TOP = {
    "input_layer.weight": "in_proj.weight",
    "out_layer.weight": "out_proj.weight",
    "out_layer.bias": "out_proj.bias",
    "offset_perturbation": "offset_perturbation",
}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
#: The official representation settings the decoder reproduces (others are refused).
_REPRESENTATION = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True,
    "voxel_size": 1.5,
    "opacity_bias": 0.1,
    "scaling_activation": "softplus",
}


def gaussian_decoder_key(key: str) -> str | None:
    """The atoken parameter an official Gaussian-decoder key fills (None: not in the table)."""
    if key in _TOP:
        return _TOP[key]
    block = _BLOCK.match(key)
    if block is None:
        return None
    index, rest = block.groups()
    for official, ours in BLOCK_RULES:
        if official.endswith("."):
            if rest.startswith(official) and rest.count(".") == official.count("."):
                return f"blocks.{index}.{ours}{rest[len(official) :]}"
        elif rest == official:
            return f"blocks.{index}.{ours}"
    return None


#: The :class:`SwinGaussianDecoder` arguments a converted decoder records (its sizes).
CONFIG_OPTIONS: tuple[str, ...] = (
    "in_channels",
    "width",
    "depth",
    "heads",
    "mlp_hidden",
    "window",
    "gaussians_per_voxel",
    "resolution",
    "scale_init",
    "scale_floor",
    "qk_norm",
)


def gaussian_decoder_config(decoder: SwinGaussianDecoder) -> dict[str, Any]:
    """The :class:`SwinGaussianDecoder` arguments (sizes and scale constants, not the
    attention settings) that rebuild ``decoder``'s shapes: what a converted folder and a
    tokenizer's ``swin_gaussians`` head record."""
    return {name: getattr(decoder, name) for name in CONFIG_OPTIONS}


def _to_atoken(key: str, value: torch.Tensor) -> tuple[str | None, torch.Tensor]:
    return gaussian_decoder_key(key), value


def read_gaussian_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The ``model`` mapping of ``configs/3d_decode_gs.yaml``.

    Raises:
        ConfigError: an unreadable file or one without a ``model`` mapping.
    """
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable official YAML config ({exc})") from exc
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict):
        raise ConfigError(f"{path}: no model mapping (not the official 3d_decode_gs.yaml)")
    return model


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ConfigError(f"the state dict has no {key!r}: not the official Gaussian decoder?")
    return tuple(state[key].shape)


def _check_representation(rep: Mapping[str, Any]) -> dict[str, float]:
    """The scale constants of ``representation_config``; other settings must be official."""
    for name, want in _REPRESENTATION.items():
        got = rep.get(name, want)
        if name == "lr" and isinstance(got, Mapping):
            got = {**want, **{k: float(v) for k, v in got.items()}}  # type: ignore[dict-item]
        if got != want:
            raise ConfigError(
                f"representation_config.{name}={got!r} is not supported (the official "
                f"decoder's is {want!r})"
            )
    return {
        "scale_init": float(rep.get("scaling_bias", 0.004)),
        "scale_floor": float(rep.get("3d_filter_kernel_size", 9e-4)),
    }


def gaussian_decoder_options(
    state: Mapping[str, torch.Tensor], model: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The :class:`SwinGaussianDecoder` arguments that hold ``state`` exactly.

    Args:
        state: the official state dict (training-only keys may be in it).
        model: the YAML's ``model`` mapping (:func:`read_gaussian_yaml`), or None (the
            released settings: heads = width / 64, windows of 8, R = 64).

    Raises:
        ConfigError: a state dict that is not the Gaussian decoder's, or a YAML that
            disagrees with its shapes or asks for what the decoder does not reproduce.
    """
    model = dict(model or {})
    width, in_channels = _shape(state, "input_layer.weight")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if depth == 0:
        raise ConfigError("the state dict has no blocks.*: not the official Gaussian decoder?")
    mlp = _shape(state, "blocks.0.mlp.mlp.0.weight")[0]
    rows = _shape(state, "out_layer.weight")[0]
    if rows % 14:
        raise ConfigError(f"out_layer.weight has {rows} rows: not 14 per Gaussian")
    k = rows // 14
    gamma = state.get("blocks.0.attn.q_rms_norm.gamma")
    rep = dict(model.get("representation_config") or {})
    shapes = {
        "model_channels": width,
        "latent_channels": in_channels,
        "num_blocks": depth,
        "mlp_channels": mlp,
        "num_gaussians": k,
    }
    for name, want in shapes.items():
        got = rep.get(name) if name == "num_gaussians" else model.get(name)
        if got is not None and int(got) != want:
            raise ConfigError(f"the YAML says {name}={got}, the state dict holds {want}")
    for name, want in (("attn_mode", "swin"), ("pe_mode", "ape")):
        if model.get(name, want) != want:
            raise ConfigError(f"{name}={model[name]!r} is not supported (only {want!r})")
    heads = model.get("num_heads")
    if heads is None:
        heads = int(gamma.shape[0]) if gamma is not None else None
    if heads is None:
        heads = width // int(model.get("num_head_channels", 64))
    qk_norm = gamma is not None
    if bool(model.get("qk_rms_norm", qk_norm)) != qk_norm:
        raise ConfigError(
            f"the YAML says qk_rms_norm={model['qk_rms_norm']}, the state dict "
            f"{'holds' if qk_norm else 'has no'} qk-norm gains"
        )
    return {
        "in_channels": int(in_channels),
        "width": int(width),
        "depth": depth,
        "heads": int(heads),
        "mlp_hidden": int(mlp),
        "window": int(model.get("window_size", 8)),
        "gaussians_per_voxel": k,
        "resolution": int(model.get("resolution", 64)),
        "qk_norm": qk_norm,
        **_check_representation(rep),
    }


def load_gaussian_decoder(
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    softcap: float | None = OFFICIAL_SOFTCAP,
    attention: str | None = None,
) -> SwinGaussianDecoder:
    """The official Gaussian decoder, in eval mode on the CPU, from its checkpoint.

    Args:
        checkpoint: ``3d_decode_gs.pt`` / ``.safetensors``, the state dict itself, or a folder
            ``atoken convert official`` wrote (:func:`~atoken.official.gaussian_folder.
            convert_gaussian_decoder`; ``config`` is then not used).
        config: ``configs/3d_decode_gs.yaml``, its ``model`` mapping (or the whole document),
            or None (the released settings).
        softcap: the attention logit cap of the official flash-attn path (30); None computes
            as the official xformers path (no cap).
        attention: a registered attention backend for the uncapped windows (None: the
            device's default, ``sdpa`` on the CPU).

    Returns:
        The decoder: ``decoder(feats [N, F], coords int32 [N, 4]) -> raw [N, 14 K]`` and
        ``decoder.to_gaussians(raw, coords) -> list[GaussianSet]``.

    Raises:
        CheckpointError: an unreadable checkpoint or converted folder.
        ConfigError: shapes or YAML settings the decoder cannot hold.
        StateDictMismatchError: keys that do not map one to one (training-only keys aside).
    """
    if not isinstance(checkpoint, Mapping) and Path(checkpoint).is_dir():
        return _load_folder(Path(checkpoint), softcap=softcap, attention=attention)
    if isinstance(checkpoint, Mapping):
        state, source = dict(checkpoint), "official Gaussian decoder state dict"
    else:
        state, source = load_official_state_dict(checkpoint), str(checkpoint)
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    if isinstance(config, (str, os.PathLike)):
        model = read_gaussian_yaml(config)
    elif isinstance(config, Mapping):
        model = dict(config.get("model", config))  # the whole document or its model mapping
    elif config is None:
        model = {}
    else:
        raise ConfigError(
            "config must be the official YAML path, its model mapping or None, got "
            f"{type(config).__name__}"
        )
    options = gaussian_decoder_options(state, model)
    decoder = SwinGaussianDecoder(**options, softcap=softcap, attention_fn=_backend(attention))
    expected = {k: v.shape for k, v in decoder.state_dict().items()}
    mapped = convert_state_dict(state, expected, source=source, mapper=_to_atoken)
    decoder.load_state_dict(mapped, strict=True)
    return decoder.eval()


def _backend(name: str | None) -> Any:
    from atoken.core.attention import default_attention_backend
    from atoken.plugins.manager import get_registry

    return get_registry().attention_backends.create(name or default_attention_backend("cpu"))


def _load_folder(
    folder: Path, *, softcap: float | None, attention: str | None
) -> SwinGaussianDecoder:
    """A decoder from a converted folder (``gaussian_decoder.json`` + ``.safetensors``)."""
    import json

    from safetensors.torch import load_file

    try:
        doc = json.loads((folder / FOLDER_CONFIG).read_text("utf-8"))
        state = load_file(str(folder / FOLDER_WEIGHTS), device="cpu")
    except Exception as exc:  # missing, unreadable, not JSON; safetensors has its own types
        raise CheckpointError(
            f"{folder}: not a converted Gaussian decoder folder ({FOLDER_CONFIG} and "
            f"{FOLDER_WEIGHTS}): {exc}"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FOLDER_FORMAT:
        raise CheckpointError(f"{folder / FOLDER_CONFIG}: not of format {FOLDER_FORMAT!r}")
    options = doc.get("options")
    allowed = set(inspect.signature(SwinGaussianDecoder).parameters) - {"softcap", "attention_fn"}
    if not isinstance(options, dict) or set(options) - allowed:
        raise CheckpointError(f"{folder / FOLDER_CONFIG}: options must be a mapping of {allowed}")
    decoder = SwinGaussianDecoder(**options, softcap=softcap, attention_fn=_backend(attention))
    expected = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise StateDictMismatchError(
            str(folder / FOLDER_WEIGHTS),
            missing=[k for k in expected if k not in found],
            unexpected=[k for k in found if k not in expected],
            wrong_shape=[
                (k, expected[k], found[k])
                for k in expected
                if found.get(k, expected[k]) != expected[k]
            ],
        )
    decoder.load_state_dict(state, strict=True)
    return decoder.eval()
