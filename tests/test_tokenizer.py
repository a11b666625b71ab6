"""The tokenizer end to end: encode/decode, FSQ tokens, persistence and typed errors."""

from __future__ import annotations

import json

import pytest
import torch

from atoken import (
    ConfigError,
    ModalityInputError,
    SparseLatent,
    TooManyTokensError,
    UnknownComponentError,
)
from atoken.engine.checkpoint import CheckpointError
from atoken.tokenizer import Tokenizer

IMAGES = [
    torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(1)),
    torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2)),
]


def _randomize_head(model: Tokenizer) -> Tokenizer:
    """The pixel head starts at zero (grey output); give it weights so outputs depend on all."""
    torch.nn.init.normal_(model.head.proj.weight, std=0.05)
    model.eval()
    return model


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return _randomize_head(Tokenizer.from_preset("tiny"))


@pytest.fixture(scope="module")
def fsq():
    torch.manual_seed(0)
    model = Tokenizer.from_preset(
        "tiny",
        bottleneck="fsq",
        bottleneck_params={"levels": [4] * 6, "groups": 8},
        latent_dim=48,
    )
    return _randomize_head(model)


def test_fresh_pixel_head_outputs_mid_grey():
    model = Tokenizer.from_preset("tiny")
    model.eval()
    out = model.reconstruct(IMAGES)
    assert all(torch.equal(x, torch.full_like(x, 0.5)) for x in out)


def test_encode_gives_a_sparse_latent_with_image_coords(tok):
    latent = tok.encode(IMAGES)
    assert isinstance(latent, SparseLatent)
    assert latent.channels == 32 and latent.seqlens.tolist() == [12, 1]
    assert bool((latent.coords[:, [0, 3]] == 0).all())
    assert latent.meta[0]["size"] == [40, 50]


def test_decode_restores_each_native_size(tok):
    out = tok.decode(tok.encode(IMAGES))
    assert [tuple(x.shape) for x in out] == [(3, 40, 50), (3, 16, 16)]
    assert all(torch.isfinite(x).all() for x in out)
    again = tok.reconstruct(IMAGES)
    assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True))  # mean: deterministic


def test_kl_latent_samples_only_when_asked(tok):
    mean = tok.encode(IMAGES)
    sampled = tok.encode(IMAGES, sample=True)
    assert not torch.equal(mean.feats, sampled.feats)
    assert torch.equal(mean.feats, tok.encode(IMAGES, sample=False).feats)


def test_batch_composition_does_not_change_a_sample(tok):
    alone = tok.reconstruct(IMAGES[:1])[0]
    together = tok.reconstruct(IMAGES)[0]
    assert torch.allclose(alone, together, atol=1e-5)


def test_fsq_tokens_round_trip(fsq):
    tokens = fsq.tokenize(IMAGES)
    assert tokens.ids.shape == (13, 8) and tokens.ids.dtype == torch.int32
    assert int(tokens.ids.min()) >= 0 and int(tokens.ids.max()) < 4096
    restored = fsq.detokenize(tokens)
    assert all(
        torch.allclose(a, b, atol=1e-6)
        for a, b in zip(restored, fsq.reconstruct(IMAGES), strict=True)
    )


def test_tokenize_needs_a_discrete_bottleneck(tok):
    with pytest.raises(ConfigError, match="continuous"):
        tok.tokenize(IMAGES)


def test_autoencode_has_gradients_and_kl_term():
    torch.manual_seed(0)
    model = _randomize_head(Tokenizer.from_preset("tiny"))
    model.train()
    recon, latent, out = model.autoencode(IMAGES)
    loss = sum((r - x).abs().mean() for r, x in zip(recon, IMAGES, strict=True))
    loss.backward()
    assert float(model.encoder.patch_embed.proj.weight.grad.abs().sum()) > 0
    assert float(model.head.proj.weight.grad.abs().sum()) > 0 and latent.channels == 32
    assert out.terms["kl"].requires_grad and float(out.terms["kl"]) > 0


def test_bf16_autocast_forward_is_finite(tok):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tok.reconstruct(IMAGES)
    assert all(torch.isfinite(x).all() for x in out)


def test_save_and_load_pretrained(tok, tmp_path):
    folder = tok.save_pretrained(tmp_path / "tok")
    assert json.loads((folder / "config.json").read_text())["format"] == "atoken-tokenizer"
    assert (folder / "model.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # no pickle
    loaded = Tokenizer.from_pretrained(folder)
    loaded.eval()
    for a, b in zip(tok.reconstruct(IMAGES), loaded.reconstruct(IMAGES), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_from_a_different_config_is_a_typed_error(tok, tmp_path):
    folder = tok.save_pretrained(tmp_path / "tok")
    doc = json.loads((folder / "config.json").read_text())
    doc["config"]["latent_dim"] = 48  # the weights were made for 32
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="different config"):
        Tokenizer.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="not a saved tokenizer"):
        Tokenizer.from_pretrained(tmp_path / "missing")


def test_bad_inputs_are_typed(tok):
    with pytest.raises(ModalityInputError, match="NaN"):
        tok.encode([torch.full((3, 16, 16), float("nan"))])
    with pytest.raises(ModalityInputError):
        tok.encode([torch.zeros(3, 1, 1)])
    with pytest.raises(TooManyTokensError):
        tok.encode([torch.zeros(3, 16 * 16400, 2)])
    with pytest.raises(UnknownComponentError, match="'kl'"):
        Tokenizer.from_preset("tiny", bottleneck="kll")
    with pytest.raises(ConfigError, match="latent_dim=48"):
        Tokenizer.from_preset(
            "tiny", bottleneck="fsq", bottleneck_params={"levels": [4] * 6, "groups": 8}
        )


def test_encode_with_ids_is_encode_and_tokenize_in_one_pass(tok, fsq):
    latent, ids = fsq.encode_with_ids(IMAGES)
    assert torch.equal(latent.feats, fsq.encode(IMAGES).feats)
    assert torch.equal(ids, fsq.tokenize(IMAGES).ids)
    latent, ids = tok.encode_with_ids(IMAGES)
    assert ids is None and torch.equal(latent.feats, tok.encode(IMAGES).feats)


def test_tensor_batches_follow_the_modality(tok):
    clips = torch.rand(2, 3, 8, 32, 32)  # [B, C, T, H, W]
    latent = tok.encode(clips, "video")
    assert latent.batch_size == 2 and int(latent.coords[:, 0].max()) == 1  # 8 frames: t 0..1
    one = tok.encode([clips[1]], "video")
    assert torch.allclose(latent.unpack()[1].feats, one.feats, atol=1e-5)
    with pytest.raises(ModalityInputError, match=r"\[B, C, T, H, W\].*pass \[x\]"):
        tok.encode(clips[0], "video")  # one clip is not a batch of 3
    with pytest.raises(ModalityInputError, match=r"\[B, C, H, W\]"):
        tok.encode(clips, "image")


def test_a_tokenizer_cast_to_bf16_encodes_and_decodes_near_fp32():
    """``tok.to(torch.bfloat16)`` (pure-bf16 inference, as the official README casts its
    model): the patch embedding takes the values in its weights' dtype."""
    torch.manual_seed(0)
    tok = Tokenizer.from_preset("tiny").eval()
    img = torch.rand(3, 32, 32)
    with torch.no_grad():
        ref = tok.decode(tok.encode([img]))[0].float()
        half = tok.to(torch.bfloat16)
        out = half.decode(half.encode([img]))[0].float()
    assert out.shape == ref.shape and bool(torch.isfinite(out).all())
    assert float((out - ref).abs().mean()) < 0.05  # bf16 rounding, not a different model
