"""SigLIP2 import, checked against open_clip/timm themselves: with ``rope=False`` the tokenizer
reproduces ``encode_image`` (normalised embedding) and the trunk's patch tokens within 1e-4."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

from timm.models import register_model  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

import atoken  # noqa: E402
from atoken.core.errors import ConfigError  # noqa: E402
from atoken.core.siglip import encoder_config_from_timm  # noqa: E402

_TINY = "atoken_test_siglip_tiny"
_TINY_GELU = "atoken_test_siglip_tiny_gelu"


def _tiny_vit(act_layer: str, **kwargs) -> VisionTransformer:
    args = dict(
        img_size=64,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=2,
        mlp_ratio=3.0,
        class_token=False,
        global_pool="map",
        act_layer=act_layer,
    )
    # timm's factory passes its own bookkeeping arguments; the ViT takes none of them
    args.update({k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg")})
    args.pop("cache_dir", None)
    return VisionTransformer(**args)


if _TINY not in timm.list_models():

    @register_model
    def atoken_test_siglip_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """A 2-layer SigLIP-style ViT (MAP head, no class token, GELU-tanh) for fast oracles."""
        return _tiny_vit("gelu_tanh", **kwargs)

    @register_model
    def atoken_test_siglip_tiny_gelu(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """The same with exact GELU, as timm's ViT-B-16-SigLIP2 trunk uses."""
        return _tiny_vit("gelu", **kwargs)


def _tiny_open_clip(timm_name: str) -> torch.nn.Module:
    """A SigLIP-style open_clip model from a custom config, weights randomised (no download)."""
    model = open_clip.model.CustomTextCLIP(
        embed_dim=64,
        vision_cfg={
            "image_size": 64,
            "timm_model_name": timm_name,
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        text_cfg={
            "context_length": 8,
            "vocab_size": 64,
            "width": 32,
            "heads": 2,
            "layers": 1,
            "no_causal_mask": True,
            "pool_type": "last",
            "proj_bias": True,
            "norm_kwargs": {"eps": 1e-6},
        },
        init_logit_bias=-10,
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # perturb every weight so no zero-init parameter hides a mapping error
        for p in model.visual.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _check_oracle(model: torch.nn.Module, images: torch.Tensor, atol: float = 1e-4) -> None:
    tok = atoken.Tokenizer.from_open_clip(model, rope=False).eval()
    x = (images - 0.5) / 0.5
    with torch.no_grad():
        ref_emb = model.encode_image(x, normalize=True)  # [B, C]
        ref_tokens = model.visual.trunk.forward_features(x)  # [B, n, C]
        emb = tok.embed(images)
        feats = tok.encode_features(images)
    B, n, C = ref_tokens.shape
    assert emb.shape == ref_emb.shape
    assert torch.allclose(emb, ref_emb, atol=atol), (emb - ref_emb).abs().max()
    assert feats.seqlens.tolist() == [n] * B
    assert torch.allclose(feats.feats, ref_tokens.reshape(B * n, C), atol=atol)


@pytest.mark.parametrize("timm_name", [_TINY, _TINY_GELU])
def test_tiny_siglip_oracle(timm_name: str) -> None:
    model = _tiny_open_clip(timm_name)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    _check_oracle(model, images)


def test_config_mirrors_the_trunk() -> None:
    trunk = _tiny_open_clip(_TINY_GELU).visual.trunk
    cfg = encoder_config_from_timm(trunk)
    bb = cfg.backbone
    assert (bb.depth, bb.width, bb.heads, bb.mlp_hidden) == (2, 64, 2, 192)
    assert (bb.act, bb.norm, bb.norm_eps, bb.bias) == ("gelu", "layernorm", 1e-6, True)
    assert cfg.pos_grid == (4, 4) and cfg.patch_size == 16 and cfg.temporal_patch == 4


def test_rope_changes_the_output_and_loads_the_same_weights() -> None:
    model = _tiny_open_clip(_TINY)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    plain = atoken.Tokenizer.from_open_clip(model, rope=False).eval()
    joint = atoken.Tokenizer.from_open_clip(model).eval()
    assert joint.encoder.transformer.rope is not None
    ours, theirs = plain.state_dict(), joint.state_dict()
    assert ours.keys() == theirs.keys()
    # The encoder comes from the trunk; other modalities' own projections start random.
    loaded = [k for k in ours if k.startswith("encoder.")]
    assert loaded and all(torch.equal(ours[k], theirs[k]) for k in loaded)
    with torch.no_grad():
        assert not torch.allclose(plain.embed(images), joint.embed(images), atol=1e-3)


def test_other_resolutions_resize_the_position_table() -> None:
    model = _tiny_open_clip(_TINY)
    tok = atoken.Tokenizer.from_open_clip(model, rope=False).eval()
    with torch.no_grad():
        emb = tok.embed([torch.rand(3, 32, 96), torch.rand(3, 64, 64)])
    assert emb.shape == (2, 64) and torch.isfinite(emb).all()


def test_unsupported_trunks_raise() -> None:
    with_cls = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0
    )
    with pytest.raises(ConfigError, match="class token"):
        atoken.Tokenizer.from_open_clip(with_cls)
    with pytest.raises(ConfigError, match="not a timm VisionTransformer"):
        atoken.Tokenizer.from_open_clip(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_vit_b16_siglip2_oracle() -> None:
    model = open_clip.create_model("ViT-B-16-SigLIP2", pretrained=None).eval()
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    _check_oracle(model, images)
