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


def test_bias_free_projections_and_fsq_on_the_mean_of_mean_logvar():
    reg = atoken.get_registry().bottlenecks
    kl = reg.create("kl", in_dim=8, latent_dim=6, bias=False)
    assert kl.proj.bias is None and kl.proj.weight.shape == (12, 8)
    fsq = reg.create("fsq", in_dim=8, levels=[4] * 6, groups=2, bias=False, logvar=True)
    assert fsq.proj.bias is None and fsq.proj.weight.shape == (24, 8)  # [mean | logvar]
    assert fsq.codebook_sizes == (4096, 4096)
    x = torch.randn(5, 8)
    out = fsq(x)
    codes, ids = fsq.quantize(x @ fsq.proj.weight[:12].T)  # only the mean rows
    assert torch.equal(out.latent, codes) and torch.equal(out.ids, ids)
