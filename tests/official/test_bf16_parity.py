"""Parity with the official AToken code (apple/ml-atoken ``AutoencoderKL``) in fp32 and bf16, run
beside atoken's on the same random weights, images and clip.

bf16 has no fixed tolerance: atoken under bf16 autocast must differ from the official fp32
run by no more, on average, than the official model's own bf16 run (weights and inputs cast, as
its README does) differs from it; fp32 must agree to 1e-4 (measured about 2e-6).

Runs where the official code imports: set ``ATOKEN_OFFICIAL_CODE`` to the folders to put on
``sys.path`` (``os.pathsep``-separated): an ml-atoken checkout plus, on a machine without CUDA,
stand-ins for what it imports but cannot run there (``flash_attn`` computing each
``cu_seqlens`` segment in fp32 as flash-attn does, the ``diffusers`` mixins and decorators;
see docs/official-weights.md). Neither is part of atoken. Skipped otherwise.
"""

from __future__ import annotations

import copy

import pytest
import torch
from einops import rearrange

import atoken
from tests.official.official_code import (
    autoencoder_arch,
    import_official,
    randomise_autoencoder,
)

FP32_TOLERANCE = 1e-4


def _official():
    kl, basic = import_official(
        "atoken_inference.model.autoencoder_kl", "atoken_inference.model.basic"
    )
    return kl.AutoencoderKL, basic.SparseTensor


def _frames(feats: torch.Tensor, coords: torch.Tensor) -> list[torch.Tensor]:
    """Official decoded rows (input order: t, row, column) -> per sample ``[T * 4, 3, H, W]``."""
    out = []
    for b in coords[:, 0].unique(sorted=True):
        rows = coords[:, 0] == b
        T, H, W = (int(v) + 1 for v in coords[rows][:, 1:4].amax(0))
        pattern = "(t h w) (pt ph pw c) -> (t pt) c (h ph) (w pw)"
        out.append(rearrange(feats[rows].float(), pattern, t=T, h=H, w=W, pt=4, ph=16, pw=16))
    return out


def _run_official(model, sparse_tensor, values, coords, dtype) -> dict:
    x = sparse_tensor(feats=values.to(dtype), coords=coords)
    with torch.no_grad():
        z, pooled, feats = model.encode(x, normalize=True)
        mean = z.feats[:, :48]  # the posterior mean (So/C's deterministic latent)
        dec = model.decode(z.replace(mean), training=False).sample
    return {
        "features": feats.feats.float(),
        "latent": mean.float(),
        "pooled": pooled.float(),
        "decoded": _frames(dec.feats, dec.coords),
    }


def _run_atoken(tok, samples, modality, bf16: bool) -> dict:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        feats = tok.encode_features(samples, modality).feats
        latent = tok.encode(samples, modality)
        pooled = tok.embed(samples, modality)
        decoded = tok.decode(latent)
    frames = [  # [3, H, W] / [3, T, H, W] in [0, 1] -> [F, 3, H, W] in [-1, 1]
        (d[None] if d.ndim == 3 else d.permute(1, 0, 2, 3)).float() * 2 - 1 for d in decoded
    ]
    return {
        "features": feats.float(),
        "latent": latent.feats.float(),
        "pooled": pooled.float(),
        "decoded": frames,
    }


def _error(got, ref, key: str, modality: str) -> tuple[float, float]:
    """(max, mean) absolute difference; decoded images compare their frame (slot 0) only."""
    if key != "decoded":
        d = (got - ref).abs()
        return float(d.max()), float(d.mean())
    diffs = [
        (a[:1] - b[:1] if modality == "image" else a - b).abs().flatten()
        for a, b in zip(got, ref, strict=True)
    ]
    d = torch.cat(diffs)
    return float(d.max()), float(d.mean())


@pytest.fixture(scope="module")
def models():
    autoencoder, sparse_tensor = _official()
    torch.manual_seed(0)
    official = autoencoder(**autoencoder_arch()).eval()
    state = randomise_autoencoder(official, torch.Generator().manual_seed(0))
    official16 = copy.deepcopy(official).to(torch.bfloat16)  # as the official README runs it
    tok = atoken.Tokenizer.from_official(state, autoencoder_arch()).eval()
    return official, official16, tok, sparse_tensor


def _cases():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 48, generator=g), torch.rand(3, 80, 112, generator=g)]
    clip = torch.rand(3, 40, 48, 64, generator=g)  # 10 latent steps: three temporal tiles
    return {"image": images, "video": [clip]}


@pytest.mark.parametrize("modality", ["image", "video"])
def test_fp32_and_bf16_against_the_official_code(models, modality):
    official, official16, tok, sparse_tensor = models
    samples = _cases()[modality]
    batch = tok.prepare(samples, modality)
    values = batch.gather([grp.values.feats for grp in batch.groups])  # [N, 3072] normalised
    c = batch.coords  # atoken (t, x = column, y = row, z) -> official (b, t, row, column, z)
    b = torch.repeat_interleave(torch.arange(len(batch.seqlens)), batch.seqlens)
    coords = torch.stack([b, c[:, 0], c[:, 2], c[:, 1], c[:, 3]], 1).int()
    ref = _run_official(official, sparse_tensor, values, coords, torch.float32)
    theirs16 = _run_official(official16, sparse_tensor, values, coords, torch.bfloat16)
    ours32 = _run_atoken(tok, samples, modality, bf16=False)
    ours16 = _run_atoken(tok, samples, modality, bf16=True)
    lines = []
    for key in ref:
        fp32 = _error(ours32[key], ref[key], key, modality)
        theirs = _error(theirs16[key], ref[key], key, modality)
        ours = _error(ours16[key], ref[key], key, modality)
        lines.append(
            f"{modality} {key}: fp32 {fp32[0]:.1e}; bf16 max/mean atoken {ours[0]:.1e}/"
            f"{ours[1]:.1e}, official {theirs[0]:.1e}/{theirs[1]:.1e}"
        )
        assert fp32[0] < FP32_TOLERANCE, lines[-1]
        assert ours[1] <= theirs[1], lines[-1]  # bf16: within the official model's own error
    print("\n".join(lines))
