"""Parity with the official Gaussian decoder code (apple/ml-atoken ``SLatGaussianDecoder``), run
beside atoken's on the same random weights and voxels.

Runs where the official code imports: set ``ATOKEN_OFFICIAL_CODE`` to the folders to put on
``sys.path`` (``os.pathsep``-separated): an ml-atoken checkout after its ``install_gs.sh``, plus,
on a machine without CUDA, folders with stand-ins for what it imports but cannot run there
(``flash_attn``, ``torchmetrics``, ``diffusers``, ``decord``, ``easydict``; see
docs/official-weights.md). Neither is part of atoken. Skipped otherwise.
"""

from __future__ import annotations

import importlib
import math
import os
import sys

import pytest
import torch

from atoken.official import OFFICIAL_SOFTCAP, load_gaussian_decoder

PATHS = [p for p in os.environ.get("ATOKEN_OFFICIAL_CODE", "").split(os.pathsep) if p]
TOLERANCE = 1e-4  # fp32; measured about 4e-6


def _official():
    if not PATHS:
        pytest.skip("set ATOKEN_OFFICIAL_CODE to an apple/ml-atoken checkout (install_gs.sh run)")
    for path in reversed(PATHS):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        decoder_gs = importlib.import_module("atoken_inference.model.decoder_gs")
        basic = importlib.import_module("atoken_inference.model.basic")
        model = importlib.import_module("atoken_inference.model")
    except Exception as exc:  # any import failure of third-party code means: not available
        pytest.skip(f"the official Gaussian decoder does not import from {PATHS}: {exc!r}")
    return decoder_gs.SLatGaussianDecoder, basic.SparseTensor, model.ATTN


def _config(width: int, heads: int, depth: int, mlp: int) -> dict:
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
        "resolution": 64,
        "model_channels": width,
        "latent_channels": 768,
        "num_blocks": depth,
        "num_heads": heads,
        "mlp_channels": mlp,
        "attn_mode": "swin",
        "window_size": 8,
        "representation_config": rep,
    }


def _randomise(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    for key, value in state.items():
        if key == "offset_perturbation":
            continue
        if value.ndim == 1:
            mean = 1.0 if "norm" in key else 0.0
            state[key] = mean + 0.1 * torch.randn(value.shape, generator=g)
        else:  # larger qkv weights: logits of several units, where the cap shows
            gain = 2.0 if "to_qkv" in key else 1.0
            state[key] = torch.randn(value.shape, generator=g) * gain / math.sqrt(value.shape[1])
    model.load_state_dict(state)
    return state


def _voxels(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two samples: a sphere shell and scattered voxels (batch-contiguous, as the official
    SparseTensor needs), int32 (sample, x, y, z)."""
    d = torch.randn(600, 3, generator=g)
    shell = (32 + 12 * d / d.norm(dim=1, keepdim=True)).round().long().clamp(0, 63)
    scattered = torch.randint(0, 64, (150, 3), generator=g)
    parts = [torch.unique(shell, dim=0), torch.unique(scattered, dim=0)]
    coords = torch.cat([torch.cat([torch.full((len(p), 1), b), p], 1) for b, p in enumerate(parts)])
    return torch.rand(len(coords), 768, generator=g) * 2 - 1, coords.int()


def test_gaussian_parameters_match_the_official_decoder(monkeypatch):
    official_cls, sparse_tensor, attn = _official()
    if not torch.cuda.is_available():  # the official Gaussian class moves constants to CUDA
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    g = torch.Generator().manual_seed(0)
    config = _config(width=192, heads=3, depth=2, mlp=384)
    official = official_cls(**config).eval()
    state = _randomise(official, g)
    softcap = OFFICIAL_SOFTCAP if attn == "flash_attn" else None  # xformers: no cap
    ours = load_gaussian_decoder(state, {"model": config}, softcap=softcap)
    feats, coords = _voxels(g)
    captured = {}
    official.out_layer.register_forward_hook(lambda m, i, o: captured.update(raw=o.feats))
    with torch.no_grad():
        reps = official(sparse_tensor(feats=feats, coords=coords))
        raw = ours(feats, coords)
    assert (raw - captured["raw"]).abs().max() < TOLERANCE
    sets = ours.to_gaussians(raw, coords)
    assert len(sets) == len(reps) == 2
    for rep, gs in zip(reps, sets, strict=True):
        pairs = [
            (rep.get_xyz, gs.means),
            (rep.get_features.reshape(-1, 3), gs.sh0),  # SH degree 0: the DC term only
            (rep.get_scaling, gs.scales),
            (rep.get_rotation, gs.quats),
            (rep.get_opacity[:, 0], gs.opacities),
        ]
        for theirs, mine in pairs:
            assert theirs.shape == mine.shape
            assert (theirs - mine).abs().max() < TOLERANCE
