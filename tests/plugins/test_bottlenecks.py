"""The kl and fsq bottlenecks; FSQ against vector-quantize-pytorch as the oracle."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import atoken
from atoken import ConfigError
from atoken.plugins.bottlenecks.fsq import codebook_usage

vqp = pytest.importorskip("vector_quantize_pytorch")

LEVELS = [[8, 8, 8, 5, 5, 5], [4] * 6, [7, 5, 5, 5, 5], [8, 6, 5], [3]]


def _fsq(levels, groups=1, in_dim=8):
    return atoken.get_registry().bottlenecks.create(
        "fsq", levels=levels, groups=groups, in_dim=in_dim
    )


@given(
    levels=st.sampled_from(LEVELS),
    groups=st.integers(1, 3),
    n=st.integers(0, 20),
    scale=st.floats(0.1, 20),
    seed=st.integers(0, 2**16),
)
def test_fsq_matches_vector_quantize_pytorch(levels, groups, n, scale, seed):
    fsq = _fsq(levels, groups)
    oracle = vqp.FSQ(levels=levels, num_codebooks=groups)
    z = torch.randn(n, groups * len(levels), generator=torch.Generator().manual_seed(seed)) * scale
    z_q, ids = fsq.quantize(z)
    out, oracle_ids = oracle(z[None])  # [1, n, G*d], [1, n, G] (or [1, n] for one group)
    assert torch.equal(z_q, out[0])
    assert torch.equal(ids, oracle_ids[0].reshape(n, groups))
    assert torch.equal(fsq.ids_to_codes(ids), z_q)  # exact round trip
    expected = oracle.indices_to_codes(oracle_ids)[0] if n else z_q
    assert torch.equal(fsq.ids_to_codes(ids), expected.reshape(n, fsq.latent_dim))


def test_fsq_official_config_and_codes():
    fsq = _fsq([4] * 6, groups=8, in_dim=16)
    assert fsq.latent_dim == 48 and fsq.codebook_size == 4096
    z_q, ids = fsq.quantize(torch.randn(100, 48) * 5)
    assert set(torch.unique(z_q).tolist()) <= {-1.0, -0.5, 0.0, 0.5}  # asymmetric for even L
    assert ids.dtype == torch.int32 and ids.shape == (100, 8)
    assert int(ids.max()) < 4096


def test_fsq_is_fp32_under_bf16_autocast_and_has_straight_through_grads():
    fsq = _fsq([8, 8, 8, 5, 5, 5])
    x = torch.randn(10, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fsq(x)
    assert out.latent.dtype == torch.float32
    out.latent.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_fsq_every_id_round_trips_through_quantize():
    levels = torch.tensor([5, 3, 4])
    fsq = _fsq(levels.tolist())
    ids = torch.arange(fsq.codebook_size, dtype=torch.int32)[:, None]  # [60, 1]
    codes = fsq.ids_to_codes(ids)  # [60, 3]
    # invert the bound: the z whose quantization is exactly each code
    half_l = (levels - 1) * (1 + fsq.eps) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    z = torch.atanh((codes * (levels // 2) + offset) / half_l) - torch.atanh(offset / half_l)
    z_q, back = fsq.quantize(z)
    assert torch.equal(back, ids) and torch.equal(z_q, codes)


def test_fsq_errors_and_usage():
    with pytest.raises(ConfigError, match="level"):
        _fsq([2, 4])
    fsq = _fsq([4, 4])
    with pytest.raises(ConfigError, match="ids"):
        fsq.ids_to_codes(torch.tensor([[16]]))
    with pytest.raises(ConfigError, match="channels"):
        fsq.quantize(torch.zeros(3, 5))
    usage = codebook_usage(torch.tensor([[0], [1], [1], [3]]), 16)
    assert usage["usage"] == pytest.approx(3 / 16)
    assert usage["perplexity"] == pytest.approx(
        torch.tensor([0.25, 0.5, 0.25])
        .log()
        .mul(torch.tensor([-0.25, -0.5, -0.25]))
        .sum()
        .exp()
        .item()
    )


def test_kl_sampling_and_term():
    kl = atoken.get_registry().bottlenecks.create("kl", in_dim=8, latent_dim=4)
    x = torch.randn(50, 8)
    kl.eval()
    mean, logvar = kl.posterior(x)
    out = kl(x)
    assert torch.equal(out.latent, mean)  # mean at inference
    assert not torch.equal(kl(x, sample=True).latent, mean)  # sample by flag
    kl.train()
    assert not torch.equal(kl(x).latent, mean)  # samples in training
    expected = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1).mean()
    assert torch.allclose(out.terms["kl"], expected)
    with torch.no_grad():  # a standard normal posterior has zero KL
        kl.proj.weight.zero_()
        kl.proj.bias.zero_()
    assert float(kl(x).terms["kl"].detach()) == 0.0
    assert float(kl(torch.zeros(0, 8)).terms["kl"]) == 0.0
    sampler = atoken.get_registry().bottlenecks.create("kl", in_dim=8, sample_at_inference=True)
    sampler.eval()
    assert not torch.equal(sampler(x).latent, sampler.posterior(x)[0])


def test_kl_initial_logvar():
    kl = atoken.get_registry().bottlenecks.create("kl", in_dim=8, latent_dim=4, init_logvar=-8.0)
    with torch.no_grad():
        kl.proj.weight.zero_()
    mean, logvar = kl.posterior(torch.randn(5, 8))
    assert torch.equal(logvar, torch.full((5, 4), -8.0))
    assert torch.equal(mean, kl.proj.bias[:4].expand(5, 4))


def test_fsq_per_group_levels_quantize_drop_and_round_trip():
    """Allocated levels: one list per group; a level of 2 is one bit, 1 drops the channel."""
    fsq = _fsq([[8, 2, 1], [4, 4, 1]], groups=2, in_dim=6)
    assert fsq.codebook_sizes == [16, 16] and fsq.latent_dim == 6
    z_q, ids = fsq.quantize(torch.randn(200, 6) * 3)  # [200, 6], [200, 2]
    assert torch.equal(z_q[:, [2, 5]], torch.zeros(200, 2))  # dropped channels are 0
    assert set(torch.unique(z_q[:, 1]).tolist()) == {-1.0, 0.0}  # one bit
    assert set(torch.unique(z_q[:, 0]).tolist()) <= {v / 4 for v in range(-4, 4)}
    assert int(ids.max()) < 16 and torch.equal(fsq.ids_to_codes(ids), z_q)
    every = torch.arange(16, dtype=torch.int32)[:, None].repeat(1, 2)  # [16, 2]: all ids
    codes = fsq.ids_to_codes(every)  # [16, 6]: each group's 16 codes are distinct
    assert len(torch.unique(codes[:, :3], dim=0)) == 16 == len(torch.unique(codes[:, 3:], dim=0))
    with pytest.raises(ConfigError, match="sizes"):
        fsq.ids_to_codes(torch.tensor([[16, 0]], dtype=torch.int32))
    one = _fsq([[5, 3], [5, 3]], groups=2, in_dim=4)  # equal rows: the uniform FSQ
    assert one.levels == [5, 3] and one.codebook_sizes == [15, 15]
    with pytest.raises(ConfigError, match="2 lists of one length"):
        _fsq([[4, 4], [4]], groups=2)
    with pytest.raises(ConfigError, match=">= 1"):
        _fsq([[4, 0], [4, 4]], groups=2)


def test_bias_free_projections_and_fsq_on_the_mean_of_mean_logvar():
    reg = atoken.get_registry().bottlenecks
    kl = reg.create("kl", in_dim=8, latent_dim=6, bias=False)
    assert kl.proj.bias is None and kl.proj.weight.shape == (12, 8)
    fsq = reg.create("fsq", in_dim=8, levels=[4] * 6, groups=2, bias=False, logvar=True)
    assert fsq.proj.bias is None and fsq.proj.weight.shape == (24, 8)  # [mean | logvar]
    assert fsq.codebook_sizes == [4096, 4096]
    x = torch.randn(5, 8)
    out = fsq(x)
    codes, ids = fsq.quantize(x @ fsq.proj.weight[:12].T)  # only the mean rows
    assert torch.equal(out.latent, codes) and torch.equal(out.ids, ids)


@given(st.integers(0, 2**31 - 1), st.integers(25, 31))
def test_fsq_ids_of_wide_groups_round_trip_exactly(target, bits):
    """Ids of up to 31 bits per group (#33): computed in integers, not float32 (exact only
    below 2^24), and never wrapped; 32 bits is refused."""
    fsq = _fsq([[2] * bits], groups=1, in_dim=bits)
    assert fsq.codebook_sizes == [2**bits]
    ids = torch.tensor([[target % 2**bits]], dtype=torch.int32)
    codes = fsq.ids_to_codes(ids)  # [1, bits] in {-1, 0}
    z_q, back = fsq.quantize(codes * 5.0)  # far from the rounding edges: the same codes
    assert torch.equal(z_q, codes) and torch.equal(back, ids)


def test_fsq_refuses_more_codes_than_int32_ids_hold():
    with pytest.raises(ConfigError, match="at most 2147483648 codes"):
        _fsq([[2] * 32], groups=1, in_dim=32)
