"""The official AToken code (apple/ml-atoken), run beside atoken in the parity tests.

``ATOKEN_OFFICIAL_CODE`` names the folders to put on ``sys.path`` (``os.pathsep``-separated): an
ml-atoken checkout (after its ``install_gs.sh`` for the Gaussian decoder) plus, on a machine
without CUDA, stand-ins for what it imports but cannot run there (``flash_attn`` computing each
``cu_seqlens`` segment in fp32 with flash-attn's softcap formula, the ``diffusers`` mixins and
decorators, ``torchmetrics``, ``decord``, ``easydict``, and for the packing script ``cv2`` and
``utils3d``; see docs/official-weights.md and docs/3d.md). Neither is part of atoken. A test
that needs it is skipped, with the reason, where it does not import.

Also the official models at a reduced width with every value random, as the parity tests use
them.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from types import ModuleType

import pytest
import torch

PATHS = [p for p in os.environ.get("ATOKEN_OFFICIAL_CODE", "").split(os.pathsep) if p]
#: The reduced tokenizer: head dim 72 as released; MLP 4304 / 1152 x 144.
WIDTH, HEADS, DEPTH, MLP = 144, 2, 2, 538


def import_official(*modules: str) -> list[ModuleType]:
    """The official ``modules`` (``atoken_inference.model.autoencoder_kl``, ...), or a skip
    that names why they are not available."""
    if not PATHS:
        pytest.skip("set ATOKEN_OFFICIAL_CODE to an apple/ml-atoken checkout (and stand-ins)")
    for path in reversed(PATHS):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        return [importlib.import_module(m) for m in modules]
    except Exception as exc:  # any import failure of third-party code means: not available
        pytest.skip(f"the official code does not import from {PATHS}: {exc!r}")


def autoencoder_arch() -> dict:
    """The official ``arch_cfg`` of So/C at the reduced width (``pe_mode: joint``)."""
    return {
        "patch_size": [4, 16, 16],
        "in_channels": 3072,
        "out_channels": 3072,
        "latent_channels": 48,
        **{f"{side}_model_channels": WIDTH for side in ("encoder", "decoder")},
        **{f"{side}_num_blocks": DEPTH for side in ("encoder", "decoder")},
        **{f"{side}_num_heads": HEADS for side in ("encoder", "decoder")},
        **{f"{side}_mlp_channels": MLP for side in ("encoder", "decoder")},
        **{f"{side}_attn_mode": "full" for side in ("encoder", "decoder")},
        **{f"{side}_pe_mode": "joint" for side in ("encoder", "decoder")},
        "encoder_qk_rms_norm": False,
        "encoder_use_bias": True,
        "encoder_use_rms_norm": False,
        "decoder_qk_rms_norm": True,
        "decoder_use_bias": False,
        "decoder_use_rms_norm": True,
        "use_decoder": True,
    }


def randomise_autoencoder(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Every value random: gains 1 +- 0.1 (norms, qk gammas), biases and the MAP probe 0.1 N."""
    state = model.state_dict()
    for key, value in state.items():
        if ("norm" in key and key.endswith("weight")) or key.endswith("gamma"):
            state[key] = 1 + 0.1 * torch.randn(value.shape, generator=g)
        elif value.ndim == 1:
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        else:
            state[key] = torch.randn(value.shape, generator=g) / math.sqrt(value.shape[-1])
    model.load_state_dict(state)
    return state


def gaussian_config(width: int, heads: int, depth: int, mlp: int, resolution: int = 64) -> dict:
    """The ``SLatGaussianDecoder`` arguments of ``3d_decode_gs.yaml`` at another size."""
    lr = {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1}
    rep = {
        "lr": lr,
        "perturb_offset": True,
        "voxel_size": 1.5,
        "num_gaussians": 32,
        "2d_filter_kernel_size": 0.1,
        "3d_filter_kernel_size": 9.0e-4,
        "scaling_bias": 4.0e-3,
        "opacity_bias": 0.1,
        "scaling_activation": "softplus",
    }  # fmt: skip
    return {
        "resolution": resolution,
        "model_channels": width,
        "latent_channels": 768,
        "num_blocks": depth,
        "num_heads": heads,
        "mlp_channels": mlp,
        "attn_mode": "swin",
        "window_size": 8,
        "representation_config": rep,
    }


def randomise_gaussian_decoder(
    model: torch.nn.Module, g: torch.Generator
) -> dict[str, torch.Tensor]:
    """Every value random, the Hammersley offsets kept; qkv weights at twice the usual scale,
    so that logits reach several units, where the attention cap shows."""
    state = model.state_dict()
    for key, value in state.items():
        if key == "offset_perturbation":
            continue
        if value.ndim == 1:
            mean = 1.0 if "norm" in key else 0.0
            state[key] = mean + 0.1 * torch.randn(value.shape, generator=g)
        else:
            gain = 2.0 if "to_qkv" in key else 1.0
            state[key] = torch.randn(value.shape, generator=g) * gain / math.sqrt(value.shape[1])
    model.load_state_dict(state)
    return state
