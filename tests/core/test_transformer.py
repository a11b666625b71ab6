"""Transformer, patch embedding, position table, MAP head, encoder, configs, presets and the
Tokenizer: packing never mixes samples, options build what they say, inputs map exactly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import atoken
from atoken.core.attention import attention_math, attention_sdpa
from atoken.core.config import (
    BackboneConfig,
    EncoderConfig,
    TokenizerConfig,
    load_preset,
    preset_names,
)
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError, LatentValidationError, UnknownComponentError
from atoken.core.kv_cache import KVCache
from atoken.core.patch_embed import PatchEmbed4D, PositionTable2D
from atoken.core.pooling import MAPHead
from atoken.core.rope import Rope4D
from atoken.core.transformer import Transformer, make_norm

W, HEADS = 32, 2


def _small_encoder_config(**backbone) -> EncoderConfig:
    options = {"depth": 2, "width": W, "heads": HEADS, "mlp_hidden": 64}
    options.update(backbone)
    return EncoderConfig(backbone=BackboneConfig(**options), patch_size=4, temporal_patch=2)


def _grid_sample(rows: int, cols: int, channels: int, g: torch.Generator, t: int = 1):
    """(values [n, C], coords [n, 4]) of a dense rows x cols grid (t frames)."""
    tt, yy, xx = torch.meshgrid(
        torch.arange(t), torch.arange(rows), torch.arange(cols), indexing="ij"
    )
    coords = torch.stack([tt, xx, yy, torch.zeros_like(tt)], -1).reshape(-1, 4).int()  # [n, 4]
    return torch.randn(coords.shape[0], channels, generator=g), coords


def _packed(grids: list[tuple[int, int]], channels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    parts = [_grid_sample(r, c, channels, g) for r, c in grids]
    values = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, channels)
    coords = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, 4, dtype=torch.int32)
    seqlens = torch.tensor([r * c for r, c in grids], dtype=torch.int64)
    return values, coords, seqlens


# ------------------------------------------------------------------------------ transformer
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"norm": "rmsnorm", "qk_norm": True, "bias": False},
        {"norm": "rmsnorm", "qk_norm": True, "qk_norm_per_head": True, "bias": False},
        {"rope": False, "act": "gelu"},
        {"rope_pairs": "half", "rope_frequencies": "axial"},
    ],
)
def test_encoder_packed_equals_each_sample_alone(options) -> None:
    torch.manual_seed(0)
    enc = Encoder(_small_encoder_config(**options)).eval()
    grids = [(3, 5), (1, 1), (4, 4), (2, 7)]
    values, coords, seqlens = _packed(grids, enc.patch_embed.patch_dim)
    with torch.no_grad():
        packed = enc(values, coords, seqlens)  # [N, C]
        pooled = enc.pool(packed, seqlens)  # [B, C]
        start = 0
        for b, n in enumerate(seqlens.tolist()):
            sl = slice(start, start + n)
            alone = enc(values[sl], coords[sl], seqlens[b : b + 1])
            assert torch.allclose(packed[sl], alone, atol=1e-5, rtol=1e-5)
            alone_pooled = enc.pool(alone, seqlens[b : b + 1])
            assert torch.allclose(pooled[b], alone_pooled[0], atol=1e-5, rtol=1e-5)
            start += n


def test_backbone_options_build_what_they_say() -> None:
    official_decoder = Encoder(_small_encoder_config(norm="rmsnorm", qk_norm=True, bias=False))
    block = official_decoder.transformer.blocks[0]
    assert isinstance(block.norm1, torch.nn.RMSNorm)
    assert isinstance(block.attn.q_norm, torch.nn.RMSNorm)
    assert block.attn.qkv.bias is None and block.mlp.fc1.bias is None
    assert official_decoder.patch_embed.proj.bias is None
    siglip = Encoder(_small_encoder_config(act="gelu"))
    block = siglip.transformer.blocks[0]
    assert isinstance(block.norm1, torch.nn.LayerNorm) and block.norm1.bias is not None
    assert isinstance(block.attn.q_norm, torch.nn.Identity)
    assert block.mlp.act.approximate == "none"
    assert Encoder(_small_encoder_config()).transformer.blocks[0].mlp.act.approximate == "tanh"
    assert Encoder(_small_encoder_config(rope=False)).transformer.rope is None


def test_attention_backend_is_injected_and_swappable() -> None:
    calls = []

    def counting(q, k, v, seqlens):
        calls.append(q.shape)
        return attention_math(q, k, v, seqlens)

    torch.manual_seed(0)
    enc = Encoder(_small_encoder_config(), attention_fn=counting).eval()
    values, coords, seqlens = _packed([(2, 3), (3, 3)], enc.patch_embed.patch_dim)
    with torch.no_grad():
        out_math = enc(values, coords, seqlens)
        assert len(calls) == 2  # one call per layer
        enc.set_attention_fn(attention_sdpa)
        out_sdpa = enc(values, coords, seqlens)
    assert len(calls) == 2
    assert torch.allclose(out_math, out_sdpa, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    values, coords, seqlens = _packed([(2, 3), (3, 2)], 2 * 4 * 4 * 3)
    for ckpt in (False, True):
        torch.manual_seed(0)
        enc = Encoder(_small_encoder_config(grad_checkpointing=ckpt))
        enc(values, coords, seqlens).square().mean().backward()
        grads.append([p.grad.clone() for p in enc.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_bf16_autocast_runs_and_stays_close() -> None:
    torch.manual_seed(0)
    enc = Encoder(_small_encoder_config()).eval()
    values, coords, seqlens = _packed([(3, 3), (2, 4)], enc.patch_embed.patch_dim)
    with torch.no_grad():
        ref = enc.pool(enc(values, coords, seqlens), seqlens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tokens = enc(values, coords, seqlens)
            emb = enc.pool(tokens, seqlens)
    assert torch.isfinite(tokens).all()
    assert emb.dtype == torch.float32
    assert F.cosine_similarity(emb, ref).min() > 0.98


def test_transformer_needs_coords_when_it_has_rope() -> None:
    stack = Transformer(1, W, HEADS, 64, rope=Rope4D(W // HEADS))
    with pytest.raises(ConfigError, match="coords"):
        stack(torch.zeros(3, W), torch.tensor([3]))


def test_make_norm_rejects_unknown_kinds() -> None:
    with pytest.raises(ConfigError):
        make_norm("batchnorm", 8)


def test_empty_batch_and_empty_samples() -> None:
    enc = Encoder(_small_encoder_config()).eval()
    P = enc.patch_embed.patch_dim
    with torch.no_grad():
        out = enc(torch.zeros(0, P), torch.zeros(0, 4, dtype=torch.int32), torch.zeros(0).long())
        assert out.shape == (0, W)
        assert enc.pool(out, torch.zeros(0).long()).shape == (0, W)
        values, coords, seqlens = _packed([(2, 2), (0, 0), (1, 3)], P)
        emb = enc.pool(enc(values, coords, seqlens), seqlens)
    assert emb.shape == (3, W) and torch.isfinite(emb).all()


def _plain_math(q, k, v, seqlens):
    """A backend with only the minimal signature (call_attention falls back for it)."""
    return attention_math(q, k, v, seqlens)


@pytest.mark.parametrize("backend", [*atoken.get_registry().attention_backends.names(), "plain"])
def test_transformer_handles_empty_input_with_every_backend(backend) -> None:
    if backend == "xformers" and not torch.cuda.is_available():
        pytest.skip("xformers has no CPU kernels")
    fn = (
        _plain_math
        if backend == "plain"
        else atoken.get_registry().attention_backends.create(backend)
    )
    torch.manual_seed(0)
    stack = Transformer(2, W, HEADS, 64, rope=Rope4D(W // HEADS), qk_norm=True, attention_fn=fn)
    none = torch.zeros(0, dtype=torch.int64)
    no_coords = torch.zeros(0, 4, dtype=torch.int32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        assert stack(torch.zeros(0, W), none, no_coords).shape == (0, W)  # B = 0
        x = torch.randn(5, W, generator=g)
        coords = torch.randint(0, 4, (5, 4), generator=g, dtype=torch.int32)
        out = stack(x, torch.tensor([0, 3, 0, 2]), coords)  # samples without tokens
        assert torch.allclose(out[:3], stack(x[:3], torch.tensor([3]), coords[:3]), atol=1e-5)
        assert torch.allclose(out[3:], stack(x[3:], torch.tensor([2]), coords[3:]), atol=1e-5)
        cache = KVCache(2)
        empty = stack(torch.zeros(0, W), torch.tensor([0]), no_coords, cache=cache)
        assert empty.shape == (0, W)  # no queries and no keys
        stack(x, torch.tensor([5]), coords, cache=cache)
        cache.commit(4)
        assert cache.layer(0)[0].shape[0] > 0
        empty = stack(torch.zeros(0, W), torch.tensor([0]), no_coords, cache=cache)
        assert empty.shape == (0, W)  # no queries, some keys


# ------------------------------------------------------------------------------ patch embedding
def test_from_2d_reproduces_a_conv_patch_embedding() -> None:
    """A conv [C, 3, p, p] mapped to (ph, pw, c) and inflated into slot 0 equals the conv on
    the image modality's values, whatever the other temporal slots hold."""
    torch.manual_seed(0)
    p, C = 8, 12
    conv = torch.nn.Conv2d(3, C, p, stride=p)
    image = torch.rand(3, 24, 40)
    embed = PatchEmbed4D.from_2d(conv.weight.permute(0, 2, 3, 1), conv.bias, temporal_patch=4)
    modality = atoken.get_registry().modalities.create("image", patch_size=p, temporal_patch=4)
    latent = modality.pack([image])
    with torch.no_grad():
        ours = embed(latent.feats)  # [n, C] in raster order (row, then column)
        ref = conv(image[None])[0].flatten(1).T  # [gh*gw, C]
        assert torch.allclose(ours, ref, atol=1e-5)
        noisy = latent.feats.clone()
        noisy[:, p * p * 3 :] = torch.randn_like(noisy[:, p * p * 3 :])
        assert torch.allclose(embed(noisy), ours, atol=1e-6)


def test_patch_embed_starts_with_zero_temporal_slots() -> None:
    embed = PatchEmbed4D(16, patch_size=4, temporal_patch=3)
    weight = embed.proj.weight.reshape(16, 3, 4 * 4 * 3)  # [C, pt, p*p*c]
    assert torch.all(weight[:, 1:] == 0)
    assert weight[:, 0].abs().sum() > 0


def test_patch_embed_rejects_wrong_values() -> None:
    embed = PatchEmbed4D(16, patch_size=4, temporal_patch=2)
    with pytest.raises(LatentValidationError):
        embed(torch.zeros(3, 10))
    with pytest.raises(ConfigError):
        PatchEmbed4D.from_2d(torch.zeros(16, 3, 4, 4))  # channels-first conv layout
    with pytest.raises(ConfigError):
        embed.load_2d(torch.zeros(16, 5, 5, 3))


# ------------------------------------------------------------------------------ position table
def test_position_table_native_grid_is_read_exactly_and_resized_bilinear_antialias() -> None:
    table = PositionTable2D(6, grid=(4, 4))
    _, coords, seqlens = _packed([(4, 4), (2, 8)], 1)
    with torch.no_grad():
        pos = table(coords, seqlens)  # [N, 6]
        assert torch.equal(pos[:16], table.weight.reshape(16, 6))
        ref = F.interpolate(
            table.weight.permute(2, 0, 1)[None], size=(2, 8), mode="bilinear", antialias=True
        )[0]  # [6, 2, 8]
        assert torch.allclose(pos[16:], ref.flatten(1).T, atol=1e-6)


def test_position_table_reads_row_y_and_column_x() -> None:
    table = PositionTable2D(2, grid=(3, 5))
    coords = torch.tensor([[0, 4, 2, 0], [0, 0, 0, 0], [0, 1, 2, 0]], dtype=torch.int32)
    with torch.no_grad():
        pos = table(coords, torch.tensor([3]), grids=[(3, 5)])
    for i, (x, y) in enumerate([(4, 2), (0, 0), (1, 2)]):
        assert torch.equal(pos[i], table.weight[y, x])
    with pytest.raises(LatentValidationError):
        table(coords, torch.tensor([3]), grids=[(2, 2)])


# ------------------------------------------------------------------------------ MAP head
@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(0, 9), min_size=1, max_size=5), seed=st.integers(0, 1000))
def test_map_head_equals_a_dense_per_sample_reference(lengths, seed) -> None:
    torch.manual_seed(seed)
    head = MAPHead(W, HEADS, 48).eval()
    x = torch.randn(sum(lengths), W)
    with torch.no_grad():
        out = head(x, torch.tensor(lengths))
        assert out.shape == (len(lengths), W)
        start = 0
        for b, n in enumerate(lengths):
            xs = x[start : start + n]
            start += n
            if n == 0:
                continue
            q = head.q(head.probe).view(1, HEADS, 1, -1)  # [1, H, 1, D]
            k, v = head.kv(xs).view(1, n, 2, HEADS, -1).permute(2, 0, 3, 1, 4)  # [1, H, n, D]
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, W)
            y = head.proj(y)
            y = F.normalize(y + head.mlp(head.norm(y)), dim=-1)
            assert torch.allclose(out[b], y[0], atol=1e-5)
    assert torch.allclose(out.norm(dim=-1), torch.ones(len(lengths)), atol=1e-5)


# ------------------------------------------------------------------------------ configs
EXPECTED_PRESETS = {
    "tiny": (4, 192, 3, 768),
    "small": (8, 384, 6, 1536),
    "base": (12, 768, 12, 3072),
    "so400m": (27, 1152, 16, 4304),
    "atoken-so": (27, 1152, 16, 4304),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_presets_have_the_documented_shapes(name: str) -> None:
    cfg = load_preset(name)
    bb = cfg.encoder.backbone
    assert (bb.depth, bb.width, bb.heads, bb.mlp_hidden) == EXPECTED_PRESETS[name]
    assert cfg.encoder.patch_dim == 4 * 16 * 16 * 3
    assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())


def test_preset_list_and_official_configuration() -> None:
    assert set(EXPECTED_PRESETS) <= set(preset_names())
    cfg = load_preset("atoken-so")
    enc, dec = cfg.encoder.backbone, cfg.decoder
    assert (enc.norm, enc.bias, enc.qk_norm) == ("layernorm", True, False)
    assert (dec.norm, dec.bias, dec.qk_norm) == ("rmsnorm", False, True)
    assert cfg.latent_dim == 48 and enc.head_dim == 72
    assert (enc.rope_pairs, enc.rope_frequencies) == ("interleaved", "atoken")
    assert cfg.input_mean == cfg.input_std == (0.5, 0.5, 0.5)


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="multiple of heads"):
        BackboneConfig(depth=1, width=30, heads=4, mlp_hidden=8)
    with pytest.raises(ConfigError, match="multiple of 8"):
        BackboneConfig(depth=1, width=36, heads=3, mlp_hidden=8)
    BackboneConfig(depth=1, width=36, heads=3, mlp_hidden=8, rope=False)
    with pytest.raises(ConfigError, match="norm"):
        BackboneConfig(depth=1, width=32, heads=2, mlp_hidden=8, norm="batch")
    with pytest.raises(ConfigError, match="depth"):
        BackboneConfig(depth=0, width=32, heads=2, mlp_hidden=8)
    data = load_preset("tiny").to_dict()
    data["encoder"]["backbone"]["widht"] = 3
    with pytest.raises(ConfigError, match=r"'widht'.*encoder\.backbone.*'width'"):
        TokenizerConfig.from_dict(data)
    with pytest.raises(ConfigError, match="Did you mean 'rope'"):
        load_preset("tiny").with_overrides(rpoe=False)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("tiyn")


def test_overrides_reach_the_right_level() -> None:
    cfg = load_preset("tiny").with_overrides(
        rope=False, depth=2, pos_table=False, latent_dim=16, decoder_depth=1
    )
    assert cfg.encoder.backbone.rope is False and cfg.encoder.backbone.depth == 2
    assert cfg.encoder.pos_table is False and cfg.latent_dim == 16
    assert cfg.decoder.depth == 1 and cfg.decoder.rope is True


# ------------------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def tiny() -> atoken.Tokenizer:
    torch.manual_seed(0)
    return atoken.Tokenizer.from_preset("tiny", depth=2).eval()


def test_tokenizer_embeds_mixed_resolutions(tiny) -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=g) for h, w in [(32, 48), (16, 16), (40, 20)]]
    with torch.no_grad():
        emb = tiny.embed(images)
        feats = tiny.encode_features(images)
        alone = torch.cat([tiny.embed([im]) for im in images])
    assert emb.shape == (3, 192)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(emb, alone, atol=1e-5)
    assert feats.seqlens.tolist() == [6, 1, 6] and feats.channels == 192
    assert feats.modality == ("image",) * 3
    assert feats.meta[0]["size"] == [32, 48]


def test_tokenizer_normalises_content_slots_only(tiny) -> None:
    image = torch.rand(3, 16, 32)
    packed = tiny.pack([image])
    values = packed.feats.reshape(2, 4, 16 * 16, 3)  # [n, pt, p*p, c]
    raw = tiny.modality("image").pack([image]).feats.reshape(2, 4, 16 * 16, 3)
    assert torch.allclose(values[:, 0], (raw[:, 0] - 0.5) / 0.5)
    assert torch.all(values[:, 1:] == 0)


def test_tokenizer_backends_agree_and_unknown_names_raise(tiny) -> None:
    images = [torch.rand(3, 32, 32), torch.rand(3, 16, 48)]
    with torch.no_grad():
        ref = tiny.embed(images)
        assert tiny.attention_backend == "sdpa"
        tiny.set_attention_backend("math")
        out = tiny.embed(images)
        assert tiny.encoder.transformer.attention_fn is attention_math
        tiny.set_attention_backend(None)
    assert torch.allclose(ref, out, atol=1e-5)
    with pytest.raises(UnknownComponentError, match="sdpa"):
        tiny.set_attention_backend("sdpaa")


def test_tokenizer_accepts_a_batch_tensor_and_rejects_bad_input(tiny) -> None:
    x = torch.rand(2, 3, 16, 32)
    with torch.no_grad():
        assert torch.allclose(tiny.embed(x), tiny.embed(list(x)), atol=1e-6)
    with pytest.raises(atoken.ModalityInputError):
        tiny.embed(torch.rand(3, 16, 16))
    with pytest.raises(atoken.ModalityInputError):
        tiny.embed([torch.full((3, 16, 16), 2.0)])


def test_exports() -> None:
    assert atoken.PatchEmbed4D is PatchEmbed4D
    assert "Tokenizer" in atoken.__all__ and "Rope4D" in atoken.__all__


def test_per_head_qk_norm_has_a_gain_per_head_and_no_epsilon() -> None:
    from atoken.core.transformer import Attention, HeadRMSNorm

    attn = Attention(16, 2, qk_norm=True, qk_norm_per_head=True)
    assert isinstance(attn.q_norm, HeadRMSNorm) and attn.q_norm.weight.shape == (2, 8)
    x = torch.randn(5, 2, 8) * 1e-4  # tiny values: an RMSNorm's eps would shrink them
    with torch.no_grad():
        attn.q_norm.weight.copy_(torch.rand(2, 8) + 0.5)
        y = attn.q_norm(x)
    want = x / x.pow(2).mean(-1, keepdim=True).sqrt() * attn.q_norm.weight
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


BF16_STEP = """
import torch, atoken
tok = atoken.Tokenizer.from_preset("tiny", modalities=["image"]).train()
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = tok(tok.prepare([torch.rand(3, 32, 32)], "image"), decode=True)
out.samples[0].float().mean().backward()
"""


def test_a_bf16_step_does_not_warn_about_the_norms_dtype() -> None:
    """An fp32 RMSNorm gain on a bf16 input made torch warn on every run (once per rank):
    the gain now takes the input's dtype, so the fused kernel runs and nothing warns."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-W", "default", "-c", BF16_STEP], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "Mismatch dtype" not in run.stderr and "UserWarning" not in run.stderr, run.stderr


def test_the_rms_norm_gain_follows_the_input_dtype_and_its_gradient_reaches_fp32() -> None:
    norm = make_norm("rmsnorm", 16)
    assert isinstance(norm, torch.nn.RMSNorm)  # same class family, same state dict
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 16)
    reference = F.rms_norm(x, (16,), norm.weight, norm.eps)
    assert torch.equal(norm(x), reference)  # fp32: nothing cast
    y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), reference, atol=3e-2, rtol=2e-2)
    y.float().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32
