"""The ``clip`` perceptual loss, wired to a tiny random open_clip model (no weights needed)."""

from __future__ import annotations

import open_clip
import open_clip.factory
import pytest
import torch
import torch.nn.functional as F

import atoken
from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.losses.clip import CLIPLoss, registry_normalisation

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return open_clip.CLIP(**TINY).eval()


def _embed(model, x, mean=MEAN, std=STD):
    x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return model.encode_image((x - m) / s)


def _images(seed, shape=(3, 3, 48, 40)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g), torch.rand(*shape, generator=g)


def test_cosine_distance_equals_hand_computation(tiny):
    loss = atoken.get_registry().losses.create("clip", model=tiny, mean=MEAN, std=STD)
    assert loss.size == (32, 32)  # the tower's input size
    p, t = _images(0)
    with torch.no_grad():
        expected = (1 - F.cosine_similarity(_embed(tiny, p), _embed(tiny, t), dim=-1)).mean()
        assert torch.allclose(loss(p, t, {}), expected, atol=1e-6)


def test_l2_distance_on_normalised_and_raw_embeddings(tiny):
    p, t = _images(1)
    with torch.no_grad():
        e_p, e_t = _embed(tiny, p), _embed(tiny, t)
        unit = (F.normalize(e_p, dim=-1) - F.normalize(e_t, dim=-1)).square().sum(-1).mean()
        raw = (e_p - e_t).square().sum(-1).mean()
        l2 = CLIPLoss(model=tiny, mean=MEAN, std=STD, distance="l2")
        assert torch.allclose(l2(p, t, {}), unit, atol=1e-6)
        l2_raw = CLIPLoss(model=tiny, mean=MEAN, std=STD, distance="l2", normalize_embeddings=False)
        assert torch.allclose(l2_raw(p, t, {}), raw, rtol=1e-5)


def test_zero_for_identical_images_gradient_otherwise(tiny):
    loss = CLIPLoss(model=tiny, mean=MEAN, std=STD)
    p, t = _images(2)
    assert float(loss(t, t, {})) == pytest.approx(0.0, abs=1e-6)
    p.requires_grad_(True)
    value = loss(p, t, {})
    (grad,) = torch.autograd.grad(value, p)
    assert value.item() > 0 and float(grad.abs().sum()) > 0
    assert not any(q.requires_grad for q in tiny.parameters())


def test_list_of_sizes(tiny):
    loss = CLIPLoss(model=tiny, mean=MEAN, std=STD)
    p = [torch.rand(3, 20, 50), torch.rand(3, 32, 32)]
    t = [torch.rand(3, 20, 50), torch.rand(3, 32, 32)]
    with torch.no_grad():
        e_p = torch.cat([_embed(tiny, x[None]) for x in p])
        e_t = torch.cat([_embed(tiny, x[None]) for x in t])
        expected = (1 - F.cosine_similarity(e_p, e_t, dim=-1)).mean()
        assert torch.allclose(loss(p, t, {}), expected, atol=1e-6)


def test_normalisation_from_the_model_config(tiny, monkeypatch):
    monkeypatch.setattr(
        tiny.visual, "preprocess_cfg", {"mean": MEAN, "std": STD, "size": 32}, raising=False
    )
    from_config = CLIPLoss(model=tiny)
    explicit = CLIPLoss(model=tiny, mean=MEAN, std=STD)
    p, t = _images(3)
    with torch.no_grad():
        assert torch.equal(from_config(p, t, {}), explicit(p, t, {}))


def test_siglip2_normalisation_comes_from_open_clip_tables():
    assert registry_normalisation("ViT-B-16-SigLIP2") == ((0.5,) * 3, (0.5,) * 3)
    assert registry_normalisation("no-such-model") is None


def test_weights_are_never_downloaded(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="pretrained="):
        atoken.get_registry().losses.create("clip")
    with pytest.raises(WeightsNotFoundError, match="refused"):
        CLIPLoss(model_name="ViT-B-16-SigLIP2", pretrained="webli")  # a tag would download
    with pytest.raises(WeightsNotFoundError, match=r"missing\.safetensors"):
        CLIPLoss(pretrained=tmp_path / "missing.safetensors")


def test_local_checkpoint_for_a_model_name(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "atoken-tiny-test", TINY)
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    loss = CLIPLoss(model_name="atoken-tiny-test", pretrained=path, mean=MEAN, std=STD)
    assert loss.model is None  # built on first use
    p, t = _images(4)
    with torch.no_grad():
        expected = CLIPLoss(model=tiny, mean=MEAN, std=STD)(p, t, {})
        assert torch.allclose(loss(p, t, {}), expected, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"distance": "manhattan"},
        {"mean": (0.5, 0.5, 0.5)},
        {"mean": (0.5,), "std": (0.5,)},
        {"size": 0},
    ],
)
def test_bad_parameters(tiny, params):
    with pytest.raises(ConfigError):
        CLIPLoss(model=tiny, **params)


def test_a_model_without_encode_image_is_refused():
    with pytest.raises(ConfigError, match="encode_image"):
        CLIPLoss(model=torch.nn.Linear(2, 2))
