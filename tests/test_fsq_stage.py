"""FSQ as stage 4: ``to_fsq`` on a trained-looking KL tokenizer, and the transform-coding
baseline it is measured against at equal bits (``atoken.baselines.TransformCoder``)."""

from __future__ import annotations

import copy

import pytest
import torch

from atoken.baselines import PCATokenizer, TransformCoder
from atoken.core.errors import ConfigError
from atoken.data.images import TRAIN_PHOTOS, load_photo
from atoken.engine.pca_init import init_from_pca
from atoken.engine.transforms import to_fsq
from atoken.tokenizer import Tokenizer

LINEAR_ENDS = {"final_norm": False, "decoder_final_norm": False, "decoder_bias": True}


def _psnr(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    mse = torch.stack([((x.clamp(0, 1) - y) ** 2).mean() for x, y in zip(a, b, strict=True)])
    return float((-10 * torch.log10(mse)).mean())


@pytest.fixture(scope="module")
def photos():
    images = [load_photo(name).float() / 255 for name in TRAIN_PHOTOS[:4]]
    crops = [x[:, i : i + 64, j : j + 64] for x in images for i in (0, 64) for j in (0, 64)]
    return crops[:12], crops[12:]  # training crops, held-out crops


@pytest.fixture(scope="module")
def kl_tokenizer(photos):
    """A tiny KL tokenizer started as the PCA of the training crops (a real latent)."""
    train, _ = photos
    torch.manual_seed(0)
    tok = Tokenizer.from_preset("tiny", latent_dim=16, depth=1, decoder_depth=1, **LINEAR_ENDS)
    pca = PCATokenizer(latent_dim=16).fit(train)
    init_from_pca(tok, pca)
    return tok.eval(), pca


def test_calibrated_to_fsq_keeps_the_decoder_close_to_the_kl_output(photos, kl_tokenizer):
    train, heldout = photos
    kl, _ = kl_tokenizer
    with torch.no_grad():
        before = _psnr(kl.reconstruct(heldout), heldout)
        plain = to_fsq(copy.deepcopy(kl), levels=[4, 4], groups=8)
        calibrated = to_fsq(
            copy.deepcopy(kl), levels=[4, 4], groups=8, calibration=[(train, "image")]
        )
        p_plain = _psnr(plain.eval().reconstruct(heldout), heldout)
        p_cal = _psnr(calibrated.eval().reconstruct(heldout), heldout)
    assert calibrated.config.bottleneck == "fsq" and calibrated.bottleneck.codebook_size == 16
    assert p_cal > p_plain + 3  # the raw mean saturates FSQ's bound; calibrated it does not
    assert p_cal < before  # 2 bits per channel cost something
    ids = calibrated.tokenize(heldout).ids  # [N, 8] in [0, 16)
    assert ids.shape[1] == 8 and int(ids.min()) >= 0 and int(ids.max()) < 16
    assert len(torch.unique(ids[:, 0])) > 4  # the first group uses much of its codebook


def test_to_fsq_needs_groups_that_tile_the_latent(kl_tokenizer):
    kl, _ = kl_tokenizer
    with pytest.raises(ConfigError, match="expand_latent first"):
        to_fsq(copy.deepcopy(kl), levels=[4] * 6, groups=8)
    fsq = to_fsq(copy.deepcopy(kl), levels=[4] * 4, groups=4)
    with pytest.raises(ConfigError, match="'kl' bottleneck"):
        to_fsq(fsq, levels=[4] * 4, groups=4)


def test_transform_coding_spends_exactly_the_bits_and_allocation_helps(photos, kl_tokenizer):
    train, heldout = photos
    _, pca = kl_tokenizer
    uniform = TransformCoder.fit(pca, train, bits_per_token=32, allocation="uniform")
    optimal = TransformCoder.fit(pca, train, bits_per_token=32, allocation="optimal")
    assert uniform.bits == [2] * 16 and optimal.bits_per_token == 32
    assert optimal.bits[0] > 2 and optimal.bits[0] >= optimal.bits[-1]  # variance gets bits
    exact = _psnr(pca.reconstruct(heldout), heldout)
    p_uni = _psnr(uniform.reconstruct(heldout), heldout)
    p_opt = _psnr(optimal.reconstruct(heldout), heldout)
    assert p_uni < p_opt < exact
    many = TransformCoder.fit(pca, train, bits_per_token=16 * 10, allocation="uniform")
    assert _psnr(many.reconstruct(heldout), heldout) == pytest.approx(exact, abs=0.3)


def test_transform_coding_refuses_what_it_cannot_do(photos, kl_tokenizer):
    train, _ = photos
    _, pca = kl_tokenizer
    with pytest.raises(ConfigError, match="split"):
        TransformCoder.fit(pca, train, bits_per_token=33)
    with pytest.raises(ConfigError, match="allocation"):
        TransformCoder.fit(pca, train, bits_per_token=32, allocation="greedy")
    with pytest.raises(ConfigError, match="fitted"):
        TransformCoder.fit(PCATokenizer(latent_dim=4), train, bits_per_token=8)


def test_the_to_fsq_transform_lets_its_new_layers_learn_at_the_full_lr(photos, kl_tokenizer):
    from atoken.engine.pca_init import PCA_MAPS
    from atoken.engine.runconfig import StageSpec
    from atoken.engine.transforms import StageContext, ToFSQ

    train, _ = photos
    kl, _ = kl_tokenizer

    class Task:
        modality = "image"

        def batch(self, step, micro):
            return train[step::4]

    class Mixture:
        pretrained_prefixes = PCA_MAPS

    mixture = Mixture()
    context = StageContext(stage=StageSpec(name="fsq", steps=1, tasks=()), tasks=[Task()])
    context.mixture = mixture
    tok = copy.deepcopy(kl)
    ToFSQ(levels=(4, 4), groups=8, calibrate=2)(tok, context)
    assert tok.config.bottleneck == "fsq"
    assert "bottleneck." not in mixture.pretrained_prefixes
    assert "decoder.in_proj." not in mixture.pretrained_prefixes
    assert "encoder.patch_embed." in mixture.pretrained_prefixes  # the PCA maps stay slow


def test_allocated_to_fsq_spends_the_bits_as_transform_coding(photos, kl_tokenizer, tmp_path):
    """``to_fsq(bits=...)`` at the budget of a uniform FSQ: the strong channels get more
    levels, the held-out reconstruction beats the uniform FSQ and comes near the transform
    coder with optimal allocation (the KL latent here is the PCA's), and the tokenizer saves,
    loads and round-trips its ids through the public API."""
    train, heldout = photos
    kl, pca = kl_tokenizer
    with torch.no_grad():
        uniform = to_fsq(copy.deepcopy(kl), levels=[4, 4], groups=8, calibration=[(train, "image")])
        allocated = to_fsq(copy.deepcopy(kl), groups=8, bits=32, calibration=[(train, "image")])
        p_uni = _psnr(uniform.eval().reconstruct(heldout), heldout)
        p_all = _psnr(allocated.eval().reconstruct(heldout), heldout)
    levels = allocated.bottleneck.level_table  # [8 groups, 2 channels]
    assert float(levels.double().log2().sum()) == 32  # exactly the uniform FSQ's bits
    assert int(levels.max()) > 4 and int(levels.min()) < 4  # uneven, unlike [4, 4] x 8
    optimal = TransformCoder.fit(pca, train, bits_per_token=32, allocation="optimal")
    p_opt = _psnr(optimal.reconstruct(heldout), heldout)
    assert p_all > p_uni + 0.5
    assert p_all == pytest.approx(p_opt, abs=1.0)
    allocated.save_pretrained(tmp_path / "fsq")
    back = Tokenizer.from_pretrained(tmp_path / "fsq").eval()
    assert back.config.bottleneck_params["levels"] == levels.tolist()
    with torch.no_grad():
        tokens = back.tokenize(heldout)
        assert torch.equal(tokens.ids, allocated.tokenize(heldout).ids)
        again = back.detokenize(tokens)
        direct = back.reconstruct(heldout)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(again, direct, strict=True))


def test_allocated_to_fsq_needs_calibration_and_fitting_groups(photos, kl_tokenizer):
    train, _ = photos
    kl, _ = kl_tokenizer
    with pytest.raises(ConfigError, match="calibration"):
        to_fsq(copy.deepcopy(kl), groups=8, bits=32)
    with pytest.raises(ConfigError, match="tile"):
        to_fsq(copy.deepcopy(kl), groups=3, bits=32, calibration=[(train, "image")])
    with pytest.raises(ConfigError, match="int32"):
        to_fsq(copy.deepcopy(kl), groups=1, bits=64, calibration=[(train, "image")])
    untouched = copy.deepcopy(kl)
    with pytest.raises(ConfigError):
        to_fsq(untouched, groups=3, bits=32, calibration=[(train, "image")])
    assert untouched.config.bottleneck == "kl"  # a refused switch changes nothing
    assert torch.equal(untouched.decoder.in_proj.weight, kl.decoder.in_proj.weight)
