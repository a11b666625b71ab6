"""Known answers of the official AToken model (apple/ml-atoken 3f5afdc), written down as
numbers, checked on what the converter builds: RoPE, position table, patch layout, norms,
the [mean | logvar] projection, FSQ and the zero-shot constants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import atoken
from atoken.core.rope import Rope4D
from atoken.core.transformer import HeadRMSNorm
from atoken.official import (
    OFFICIAL_AXIS_ORDER,
    OFFICIAL_LOGIT_BIAS,
    OFFICIAL_LOGIT_SCALE,
    official_logits,
)
from atoken.testing.official import official_state_dict

#: ``1 / 10000 ** (arange(9) / 72)`` of the official ``RotaryPositionEmbedder`` (head_dim 72).
OFFICIAL_ROPE_FREQS = [1.0, 0.8799, 0.7743, 0.6813, 0.5995, 0.5275, 0.4642, 0.4084, 0.3594]


@pytest.fixture(scope="module")
def tok() -> atoken.Tokenizer:
    # width 144 / 2 heads: the official head dimension, 72
    return atoken.Tokenizer.from_official(
        official_state_dict(width=144, heads=2, depth=1, mlp=96, seed=3), heads=2
    )


def test_rope_frequencies_are_the_official_ones_on_every_axis(tok):
    rope = tok.encoder.transformer.rope
    assert rope.head_dim == 72 and rope.pair_layout == "interleaved"
    assert rope.inv_freq.shape == (4, 9)  # 9 complex pairs = 18 real dims per axis
    for axis in range(4):
        torch.testing.assert_close(
            rope.inv_freq[axis], torch.tensor(OFFICIAL_ROPE_FREQS), atol=5e-5, rtol=0
        )
    assert tok.decoder.transformer.rope.inv_freq.equal(rope.inv_freq)


def test_rope_axis_order_is_t_row_column_z(tok):
    """Official complex slots 0-8 rotate by t, 9-17 by the row, 18-26 by the column, 27-35
    by z; atoken's coords are (t, x = column, y = row, z), hence axis order (0, 2, 1, 3)."""
    assert OFFICIAL_AXIS_ORDER == (0, 2, 1, 3)
    assert tok.config.encoder.backbone.rope_axis_order == (0, 2, 1, 3)
    assert tok.config.decoder.rope_axis_order == (0, 2, 1, 3)
    rope = tok.encoder.transformer.rope
    freqs = torch.tensor(OFFICIAL_ROPE_FREQS)
    #                       t  x=col y=row z
    coords = torch.tensor([[2, 5, 3, 7]], dtype=torch.int32)
    angles = torch.angle(rope.tables(coords))[0, 0]  # [36]
    want = torch.cat([2 * freqs, 3 * freqs, 5 * freqs, 7 * freqs])  # t, row, column, z
    want = torch.remainder(want + math.pi, 2 * math.pi) - math.pi  # angle() is in (-pi, pi]
    torch.testing.assert_close(angles, want, atol=4e-4, rtol=0)  # 4-digit freqs x 7


def test_rope_rotates_interleaved_pairs():
    """Official: ``complex(x[..., 0::2], x[..., 1::2]) * exp(i * angle)``, stacked back."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 72, generator=g)
    coords = torch.tensor([[0, 1, 0, 0]], dtype=torch.int32)  # column 1: slots 18..26 rotate
    out = Rope4D(72, axis_order=OFFICIAL_AXIS_ORDER)(x, coords)[0, 0]
    a = torch.zeros(36)
    a[18:27] = torch.tensor(OFFICIAL_ROPE_FREQS)
    even, odd = x[0, 0, 0::2], x[0, 0, 1::2]
    want = torch.stack([even * a.cos() - odd * a.sin(), even * a.sin() + odd * a.cos()], -1)
    torch.testing.assert_close(out, want.reshape(72), atol=1e-4, rtol=0)


def test_position_table_is_resized_bilinear_antialiased_and_read_at_row_column(tok):
    """Official: the [256, C] table as [16 rows, 16 cols, C], resized per sample to (rows,
    cols) = (max row + 1, max col + 1) with bilinear, antialias, align_corners=False, then
    read at [row, col]."""
    table = tok.encoder.pos_table
    rows, cols = 5, 7
    grid = torch.stack(
        torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1
    ).reshape(-1, 2)  # [35, 2] = (row, col)
    coords = torch.zeros(rows * cols, 4, dtype=torch.int32)
    coords[:, 1], coords[:, 2] = grid[:, 1], grid[:, 0]  # x = column, y = row
    got = table(coords, torch.tensor([rows * cols]))  # [35, C]
    resized = F.interpolate(
        table.weight.permute(2, 0, 1)[None],
        (rows, cols),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0]  # [C, rows, cols]
    torch.testing.assert_close(got, resized[:, grid[:, 0], grid[:, 1]].T)
    assert table.grid == (16, 16) and tok.decoder.pos_table.grid == (16, 16)


def test_patch_values_are_laid_out_pt_ph_pw_c(tok):
    """Official ``image_to_sparse``: ``(nt pt) (nh ph) (nw pw) c -> (nt nh nw) (pt ph pw c)``."""
    T, H, W = 4, 16, 32
    video = torch.arange(3 * T * H * W, dtype=torch.float32).reshape(3, T, H, W)
    video = video / video.max()
    values = tok.modality("video").pack([video]).feats  # [2, 3072], raw values
    for token, (pt, ph, pw, c) in ((0, (0, 0, 0, 0)), (0, (2, 5, 7, 1)), (1, (3, 15, 2, 2))):
        want = video[c, pt, ph, 16 * token + pw]  # token 1 is the second column of patches
        assert values[token, ((pt * 16 + ph) * 16 + pw) * 3 + c] == want
    image = torch.rand(3, 16, 16)
    slot = tok.modality("image").pack([image]).feats[0]  # temporal slot 0 only
    assert slot[((0 * 16 + 4) * 16 + 9) * 3 + 2] == image[2, 4, 9]
    assert not slot[768:].any()  # the official zero padding of frames 1..3


def test_norms_and_their_epsilons(tok):
    enc, dec = tok.config.encoder.backbone, tok.config.decoder
    assert (enc.norm, enc.norm_eps, enc.bias, enc.qk_norm) == ("layernorm", 1e-6, True, False)
    assert enc.act == dec.act == "gelu_tanh"
    assert (dec.norm, dec.norm_eps, dec.bias, dec.qk_norm_per_head) == (
        "rmsnorm",
        1e-6,
        False,
        True,
    )
    block = tok.decoder.transformer.blocks[0]
    assert isinstance(block.norm1, torch.nn.RMSNorm) and block.norm1.eps == 1e-6
    assert isinstance(tok.encoder.transformer.blocks[0].norm1, torch.nn.LayerNorm)
    assert tok.encoder.norm.eps == 1e-6 and tok.encoder.head.norm.eps == 1e-6
    # SparseMultiHeadRMSNorm: F.normalize(x) * gamma * sqrt(D), no epsilon inside the root
    norm = HeadRMSNorm(2, 2)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.5]]))
    x = torch.tensor([[[3.0, 4.0], [3e-8, 4e-8]]])  # [1, H=2, D=2]
    want = torch.tensor([[[0.848528, 1.131371], [1.697056, 0.565685]]])
    torch.testing.assert_close(norm(x), want, atol=1e-6, rtol=0)


def test_proj_is_mean_then_logvar_and_the_latent_is_the_mean(tok):
    image = torch.rand(3, 32, 48)
    features = tok.encode_features([image]).feats  # [N, C]
    w = tok.bottleneck.proj.weight  # [96, C], no bias
    assert w.shape == (96, 144) and tok.bottleneck.proj.bias is None
    with torch.no_grad():
        latent = tok.encode([image]).feats
        torch.testing.assert_close(latent, features @ w[:48].T)  # deterministic mean
        torch.testing.assert_close(tok.encode([image]).feats, latent)


def test_fsq_codes_of_the_mean():
    state = official_state_dict(width=64, heads=2, depth=1, mlp=96, seed=4)
    sod = atoken.Tokenizer.from_official(state, heads=2, fsq=True)
    fsq = sod.bottleneck
    assert (fsq.groups, fsq.levels, fsq.codebook_size) == (8, [4] * 6, 4096)
    codes, ids = fsq.quantize(torch.zeros(1, 48))
    assert ids.tolist() == [[2730] * 8]  # level index 2 (code 0) on all 6 channels
    codes, ids = fsq.quantize(torch.tensor([[-9.0, -0.6, 0.1, 9.0, 0.0, 0.0] * 8]))
    assert codes[0, :6].tolist() == [-1.0, -0.5, 0.0, 0.5, 0.0, 0.0]  # {-1, -0.5, 0, 0.5}
    image = torch.rand(3, 32, 32)
    before = sod.tokenize([image]).ids
    with torch.no_grad():
        fsq.proj.weight[48:] = 0  # the logvar rows play no part
    assert sod.tokenize([image]).ids.equal(before)


def test_map_head_has_no_separate_w_s_and_the_logit_constants(tok):
    image = torch.rand(3, 32, 32)
    assert tok.semantic is None  # no W_s: the MAP head's projection is the last map
    emb = tok.embed([image])
    assert emb.shape == (1, 144)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
    assert (OFFICIAL_LOGIT_SCALE, OFFICIAL_LOGIT_BIAS) == (4.8438, -15.5625)
    logits = official_logits(emb, torch.cat([emb, -emb]))
    torch.testing.assert_close(logits, torch.tensor([[111.38835, -142.51335]]), atol=1e-3, rtol=0)


def test_tiles_are_four_latent_steps_without_a_cache(tok):
    assert (tok.config.tile_steps, tok.config.kv_cache_steps) == (4, 0)
