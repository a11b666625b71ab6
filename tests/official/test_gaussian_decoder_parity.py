"""Parity with the official Gaussian decoder code (apple/ml-atoken ``SLatGaussianDecoder``), run
beside atoken's on the same random weights and voxels.

Runs where the official code imports: set ``ATOKEN_OFFICIAL_CODE`` to the folders to put on
``sys.path`` (``os.pathsep``-separated): an ml-atoken checkout after its ``install_gs.sh``, plus,
on a machine without CUDA, folders with stand-ins for what it imports but cannot run there
(``flash_attn``, ``torchmetrics``, ``diffusers``, ``decord``, ``easydict``; see
docs/official-weights.md). Neither is part of atoken. Skipped otherwise.
"""

from __future__ import annotations

import torch

from atoken.official import OFFICIAL_SOFTCAP, load_gaussian_decoder
from tests.official.official_code import (
    gaussian_config,
    import_official,
    randomise_gaussian_decoder,
)

TOLERANCE = 1e-4  # fp32; measured about 4e-6


def _official():
    decoder_gs, basic, model = import_official(
        "atoken_inference.model.decoder_gs",
        "atoken_inference.model.basic",
        "atoken_inference.model",
    )
    return decoder_gs.SLatGaussianDecoder, basic.SparseTensor, model.ATTN


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
    config = gaussian_config(width=192, heads=3, depth=2, mlp=384)
    official = official_cls(**config).eval()
    state = randomise_gaussian_decoder(official, g)
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
