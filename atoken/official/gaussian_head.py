"""An official tokenizer whose 3D decode goes through the official Gaussian decoder.

    tok = Tokenizer.from_official("atoken-soc.pt", "configs/atoken-soc.yaml",
                                  gaussian_decoder="3d_decode_gs.pt",
                                  gaussian_config="configs/3d_decode_gs.yaml")
    (gaussians,) = tok.reconstruct(["asset.glb"], "mesh")   # one GaussianSet

The 3D modality (the mesh family's, :class:`~atoken.modalities.mesh.MeshModality`) is added to
the tokenizer's modalities and decoded by the ``swin_gaussians`` head
(:class:`~atoken.modalities.mesh.swin_head.SwinGaussianHead`), which is the official two-stage
output: the AToken decoder's patch layer (``decoder.out_layer``), of which the first F = 768
rows give the values the official pipeline passes on (``rec.feats[:, :768]``), then
``SLatGaussianDecoder``. Its parameters (C' decoder width, P = 3072 patch values):

    heads.<3D modality>.pixels.weight     [F, C']  <- decoder.out_layer.weight[:F]  ([P, C'])
    heads.<3D modality>.gaussian.*                 <- 3d_decode_gs.pt (load_gaussian_decoder)

The config records the head (``heads``, ``head_params``: the Gaussian decoder's sizes and
logit cap) and the 3D modality's voxel grid (``modality_params``: the decoder's resolution), so
``save_pretrained`` / ``from_pretrained`` (and ``atoken convert official ... --gaussian-decoder``)
keep it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from atoken.core.config import TokenizerConfig
from atoken.core.errors import ConfigError
from atoken.modalities.mesh.modality import MeshModality
from atoken.modalities.mesh.swin_decoder import SwinGaussianDecoder
from atoken.modalities.mesh.swin_head import SWIN_GAUSSIANS
from atoken.official.gaussian_decoder import gaussian_decoder_config, load_gaussian_decoder

__all__ = [
    "GAUSSIAN_MODALITY",
    "PATCH_LAYER",
    "gaussian_head_state",
    "read_gaussian_decoder",
    "with_gaussian_head",
]

#: The modality the official Gaussian decoder decodes (the mesh family's).
GAUSSIAN_MODALITY: str = MeshModality.name
#: The official key of the AToken decoder's patch layer ``[P, C']``.
PATCH_LAYER = "decoder.out_layer.weight"


def read_gaussian_decoder(
    gaussian_decoder: str | os.PathLike | Mapping[str, torch.Tensor] | SwinGaussianDecoder,
    gaussian_config: Any = None,
) -> SwinGaussianDecoder:
    """The Gaussian decoder ``gaussian_decoder`` names: ``3d_decode_gs.pt`` /
    ``.safetensors``, its state dict, a folder ``atoken convert`` wrote, or a decoder already
    loaded (``gaussian_config``: its YAML, as :func:`load_gaussian_decoder` takes).

    Raises:
        CheckpointError, ConfigError, StateDictMismatchError: as :func:`load_gaussian_decoder`.
    """
    if isinstance(gaussian_decoder, SwinGaussianDecoder):
        if gaussian_config is not None:
            raise ConfigError("gaussian_config applies to a checkpoint, not a loaded decoder")
        return gaussian_decoder
    return load_gaussian_decoder(gaussian_decoder, gaussian_config)


def with_gaussian_head(config: TokenizerConfig, decoder: SwinGaussianDecoder) -> TokenizerConfig:
    """``config`` with the 3D modality decoded by the ``swin_gaussians`` head holding
    ``decoder``'s shapes (the modality is added if missing; its voxel grid is set to the
    decoder's resolution).

    Raises:
        ConfigError: a decoder wider than the patch (F > P), or a config without a decoder.
    """
    if config.decoder is None:
        raise ConfigError("the Gaussian decoder needs a tokenizer with a decoder")
    patch = config.encoder.patch_dim
    if decoder.in_channels > patch:
        raise ConfigError(
            f"the Gaussian decoder reads {decoder.in_channels} values per voxel, but the "
            f"tokenizer's patches hold {patch}"
        )
    name = GAUSSIAN_MODALITY
    modalities = tuple(config.modalities or ())
    if name not in modalities:
        modalities = (*modalities, name)
    params = {"decoder": gaussian_decoder_config(decoder), "softcap": decoder.softcap}
    grid = {**dict(config.modality_params.get(name, {})), "resolution": decoder.resolution}
    return config.with_overrides(
        modalities=modalities,
        heads={**dict(config.heads), name: SWIN_GAUSSIANS},
        head_params={**dict(config.head_params), name: params},
        modality_params={**dict(config.modality_params), name: grid},
    )


def gaussian_head_state(
    state: Mapping[str, torch.Tensor], decoder: SwinGaussianDecoder, *, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The ``swin_gaussians`` head's entries of the tokenizer's state dict (atoken keys, see
    the module docstring), from the official tokenizer state dict ``state`` and ``decoder``.

    Raises:
        ConfigError: ``state`` has no patch layer, or one of another width.
    """
    if PATCH_LAYER not in state:
        raise ConfigError(f"{source}: no {PATCH_LAYER!r}: not an AToken tokenizer checkpoint")
    patch = state[PATCH_LAYER]  # [P, C']
    if patch.ndim != 2 or patch.shape[0] < decoder.in_channels:
        raise ConfigError(
            f"{source}: {PATCH_LAYER} is {list(patch.shape)}; the Gaussian decoder needs its "
            f"first {decoder.in_channels} rows"
        )
    prefix = f"heads.{GAUSSIAN_MODALITY}."
    out = {prefix + "pixels.weight": patch[: decoder.in_channels].clone()}  # [F, C']
    for key, value in decoder.state_dict().items():
        out[prefix + "gaussian." + key] = value
    return out
