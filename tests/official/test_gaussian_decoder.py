"""The official 3D Gaussian decoder (``3d_decode_gs.pt``): known answers of its parts (the
sinusoidal position, the windows and their shift, the logit cap, the parameter order and
activations) and the strict loader, on official-shaped random state dicts. Parity against
the official code itself is in ``test_gaussian_decoder_parity.py``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atoken.core.attention import attention_math, attention_sdpa
from atoken.core.errors import ConfigError, ModalityInputError, StateDictMismatchError
from atoken.engine.checkpoint import CheckpointError
from atoken.modalities.mesh.gaussians import hammersley
from atoken.modalities.mesh.swin_decoder import (
    SwinGaussianDecoder,
    WindowAttention,
    sinusoidal_position,
    softcapped_attention,
    window_partition,
)
from atoken.official import OFFICIAL_SOFTCAP, load_gaussian_decoder, read_gaussian_yaml
from atoken.official.gaussian_decoder import gaussian_decoder_key
from atoken.testing.official import (
    official_gaussian_decoder_state_dict,
    official_gaussian_yaml,
    write_official_checkpoint,
)

SMALL = {"width": 64, "depth": 2, "mlp": 96}


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return official_gaussian_decoder_state_dict(**SMALL, seed=2)


@pytest.fixture(scope="module")
def decoder(state) -> SwinGaussianDecoder:
    return load_gaussian_decoder(state, {"num_heads": 2})


def _voxels(seed: int = 0, n: int = 120, samples: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coords = torch.randint(0, 64, (n, 4), generator=g, dtype=torch.int32)
    coords[:, 0] = torch.randint(0, samples, (n,), generator=g, dtype=torch.int32)
    return torch.rand(n, 768, generator=g) * 2 - 1, coords


# ------------------------------------------------------------------ known answers
def test_sinusoidal_position_is_x_y_z_each_sin_then_cos_padded_with_zeros():
    xyz = torch.tensor([[1, 2, 3]], dtype=torch.int32)
    freqs = [1.0, 0.01]  # width 12 -> 2 frequencies per axis: 10000 ** (-i / 2)
    want = []
    for p in (1.0, 2.0, 3.0):
        want += [math.sin(p * f) for f in freqs] + [math.cos(p * f) for f in freqs]
    torch.testing.assert_close(sinusoidal_position(xyz, 12)[0], torch.tensor(want))
    padded = sinusoidal_position(xyz, 14)[0]  # 14 // 6 = 2 frequencies, then 2 zeros
    torch.testing.assert_close(padded, torch.tensor([*want, 0.0, 0.0]))


def test_sinusoidal_position_at_the_official_width_has_128_frequencies_per_axis():
    emb = sinusoidal_position(torch.tensor([[0, 5, 0]]), 768)[0]  # [768]
    assert emb.shape == (768,)
    torch.testing.assert_close(emb[:128], torch.zeros(128))  # x = 0: sin 0
    torch.testing.assert_close(emb[128:256], torch.ones(128))  # cos 0
    torch.testing.assert_close(emb[256 + 1], torch.tensor(math.sin(5 * 10000 ** (-1 / 128))))
    torch.testing.assert_close(emb[384 + 127], torch.tensor(math.cos(5 * 10000 ** (-127 / 128))))


def test_windows_of_8_and_their_shift_by_4():
    xs = [0, 3, 4, 7, 8, 11, 12]
    coords = torch.tensor([[0, x, 0, 0] for x in xs] + [[1, 0, 0, 0]], dtype=torch.int32)
    order, seqlens = window_partition(coords, 8, 0)
    assert seqlens.tolist() == [4, 3, 1]  # {0, 3, 4, 7}, {8, 11, 12}, then sample 1
    assert order.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    order, seqlens = window_partition(coords, 8, 4)  # borders at -4, 4, 12: {0, 3}, {4..11}
    assert seqlens.tolist() == [2, 4, 1, 1]
    assert order.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_window_rows_come_in_input_order_whatever_the_input_order():
    coords = torch.tensor([[0, 9, 0, 0], [0, 1, 0, 0], [0, 9, 1, 0], [0, 2, 7, 7]])
    order, seqlens = window_partition(coords, 8, 0)
    assert seqlens.tolist() == [2, 2] and order.tolist() == [1, 3, 0, 2]


def test_even_blocks_use_plain_windows_and_odd_blocks_shifted_ones():
    seen: list[list[int]] = []

    def spy(q, k, v, seqlens):
        seen.append(seqlens.tolist())
        return attention_sdpa(q, k, v, seqlens)

    dec = SwinGaussianDecoder(width=32, heads=2, depth=3, mlp_hidden=32, softcap=None)
    dec.set_attention_fn(spy)
    coords = torch.tensor([[0, x, 0, 0] for x in (0, 3, 4, 7, 8, 11, 12)], dtype=torch.int32)
    with torch.no_grad():
        dec(torch.zeros(7, 768), coords)
    assert seen == [[4, 3], [2, 4, 1], [4, 3]]


def test_softcapped_attention_is_the_capped_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 2, 4, generator=g) * 4 for _ in range(3))
    seqlens = torch.tensor([3, 4])
    out = softcapped_attention(q, k, v, seqlens, softcap=2.0)
    for s, e in ((0, 3), (3, 7)):
        logits = torch.einsum("ihd,jhd->hij", q[s:e], k[s:e]) / 2.0  # sqrt(D) = 2
        weights = torch.softmax(2.0 * torch.tanh(logits / 2.0), dim=-1)
        torch.testing.assert_close(out[s:e], torch.einsum("hij,jhd->ihd", weights, v[s:e]))
    huge = softcapped_attention(q, k, v, seqlens, softcap=1e6)  # no cap in effect
    torch.testing.assert_close(huge, attention_math(q, k, v, seqlens), atol=1e-5, rtol=1e-5)


def test_the_cap_is_left_out_when_every_window_holds_exactly_window_tokens():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(16, 2, 4, generator=g) * 6 for _ in range(3))
    attn = WindowAttention(attention_sdpa, 8, OFFICIAL_SOFTCAP)
    plain = attention_sdpa(q, k, v, torch.tensor([8, 8]))
    torch.testing.assert_close(attn(q, k, v, torch.tensor([8, 8])), plain)
    capped = attn(q, k, v, torch.tensor([8, 7, 1]))
    ref = softcapped_attention(q, k, v, torch.tensor([8, 7, 1]), softcap=30.0)
    torch.testing.assert_close(capped, ref)
    assert not torch.allclose(capped[:8], plain[:8], atol=1e-4)  # the cap changes the values


def test_offset_perturbation_is_the_official_hammersley_buffer():
    dec = SwinGaussianDecoder(width=32, heads=2, depth=1, mlp_hidden=32)
    h = hammersley(32)
    assert h[1].tolist() == pytest.approx([1 / 32, 0.5, 1 / 3])  # i / K, radical inverses 2, 3
    want = torch.atanh((h * 2 - 1) / 1.5)
    torch.testing.assert_close(dec.offset_perturbation, want)
    assert dec.offset_perturbation[0].tolist() == pytest.approx([math.atanh(-1 / 1.5)] * 3)


def test_raw_parameters_in_the_official_order_and_activations():
    """One voxel, K = 2: xyz | features_dc | scaling | rotation | opacity, each K-major."""
    dec = SwinGaussianDecoder(width=32, heads=2, depth=1, mlp_hidden=32, gaussians_per_voxel=2)
    xyz = [0.3, -0.2, 0.1, 0.0, 0.5, -0.4]
    dc = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    scaling = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5]
    rotation = [0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0]  # x 0.1, + (1, 0, 0, 0)
    opacity = [0.0, 1.5]
    raw = torch.tensor([xyz + dc + scaling + rotation + opacity])  # [1, 28]
    coords = torch.tensor([[0, 10, 20, 30]], dtype=torch.int32)
    (g,) = dec.to_gaussians(raw, coords)
    pert = dec.offset_perturbation  # [2, 3]
    centre = (torch.tensor([10.0, 20.0, 30.0]) + 0.5) / 64 - 0.5
    means = centre + torch.tanh(torch.tensor(xyz).view(2, 3) + pert) / 64 * 0.5 * 1.5
    torch.testing.assert_close(g.means, means)
    torch.testing.assert_close(g.sh0, torch.tensor(dc).view(2, 3))
    s = F.softplus(torch.tensor(scaling).view(2, 3) + math.log(math.expm1(0.004)))
    torch.testing.assert_close(g.scales, torch.sqrt(s**2 + 9e-4**2))
    torch.testing.assert_close(g.quats, torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0]]) / (
        torch.tensor([[1.0], [math.sqrt(2)]])
    ))  # fmt: skip
    torch.testing.assert_close(g.opacities, torch.sigmoid(torch.tensor(opacity) + math.log(1 / 9)))
    # zero raw values: the official initial Gaussians (scale ~0.0041, opacity 0.1, identity)
    (g0,) = dec.to_gaussians(torch.zeros(1, 28), coords)
    torch.testing.assert_close(g0.scales, torch.full((2, 3), math.hypot(0.004, 9e-4)))


def test_the_scale_constants_are_absolute_at_any_resolution():
    dec = SwinGaussianDecoder(width=32, heads=2, depth=1, mlp_hidden=32, resolution=32)
    coords = torch.tensor([[0, 1, 2, 3]], dtype=torch.int32)
    (g,) = dec.to_gaussians(torch.zeros(1, 14 * 32), coords)
    torch.testing.assert_close(g.scales, torch.full((32, 3), math.hypot(0.004, 9e-4)))
    centre = torch.tensor([1.5, 2.5, 3.5]) / 32 - 0.5  # voxel centres on the R = 32 grid
    torch.testing.assert_close(g.means.mean(0), centre, atol=2e-3, rtol=0)


def test_final_norm_is_a_non_affine_layernorm_with_epsilon_1e_5(decoder):
    h = torch.randn(5, 64) * 1e-3  # small values: the epsilon shows
    ref = decoder.out_proj(F.layer_norm(h, (64,), eps=1e-5))
    other = decoder.out_proj(F.layer_norm(h, (64,), eps=1e-6))
    got = decoder.out_proj(F.layer_norm(h.float(), (64,)))
    torch.testing.assert_close(got, ref)
    assert not torch.allclose(ref, other, atol=1e-4)


# ------------------------------------------------------------------ the decoder
def test_forward_shapes_and_rows_in_input_order(decoder):
    feats, coords = _voxels()
    with torch.no_grad():
        raw = decoder(feats, coords)
        perm = torch.randperm(len(coords), generator=torch.Generator().manual_seed(3))
        again = decoder(feats[perm], coords[perm])
    assert raw.shape == (120, 448)
    torch.testing.assert_close(again, raw[perm], atol=1e-5, rtol=1e-5)
    sets = decoder.to_gaussians(raw, coords)
    assert [len(s) for s in sets] == [32 * int((coords[:, 0] == b).sum()) for b in (0, 1)]


def test_samples_do_not_see_each_other(decoder):
    feats, coords = _voxels(n=60, samples=1)
    with torch.no_grad():
        alone = decoder(feats, coords)
        other = coords.clone()
        other[:, 0] = 1
        both = decoder(torch.cat([feats, torch.rand(60, 768)]), torch.cat([coords, other]))
    torch.testing.assert_close(both[:60], alone, atol=1e-5, rtol=1e-5)


def test_empty_input_gives_no_rows(decoder):
    raw = decoder(torch.zeros(0, 768), torch.zeros(0, 4, dtype=torch.int32))
    assert raw.shape == (0, 448) and decoder.to_gaussians(raw, torch.zeros(0, 4)) == []


@pytest.mark.parametrize(
    "feats, coords",
    [
        (torch.zeros(3, 767), torch.zeros(3, 4, dtype=torch.int32)),
        (torch.zeros(3, 768), torch.zeros(3, 4)),  # float coordinates
        (torch.zeros(3, 768), torch.zeros(3, 3, dtype=torch.int32)),
        (torch.zeros(1, 768), torch.tensor([[0, -1, 0, 0]], dtype=torch.int32)),
    ],
)
def test_bad_inputs_are_modality_input_errors(decoder, feats, coords):
    with pytest.raises(ModalityInputError):
        decoder(feats, coords)


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="multiple"):
        SwinGaussianDecoder(width=30, heads=4)
    with pytest.raises(ConfigError, match="window"):
        SwinGaussianDecoder(width=32, heads=2, window=0)


# ------------------------------------------------------------------ the loader
def test_the_released_shapes_give_76_keys_and_85_887_520_parameters():
    state = official_gaussian_decoder_state_dict(width=768, depth=12, mlp=3072, device="meta")
    assert len(state) == 76 and sum(v.numel() for v in state.values()) == 85_887_520
    with torch.device("meta"):
        dec = SwinGaussianDecoder()  # the released sizes are the defaults
    assert sum(v.numel() for v in dec.state_dict().values()) == 85_887_520
    for key in state:
        assert gaussian_decoder_key(key) in dec.state_dict(), key


def test_load_fills_every_parameter_from_the_checkpoint(state, decoder):
    assert not decoder.training and decoder.softcap == 30.0
    ours = decoder.state_dict()
    assert len(ours) == len(state)
    for key, value in state.items():
        torch.testing.assert_close(ours[gaussian_decoder_key(key)], value, rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_from_files_with_the_yaml(tmp_path, state, suffix):
    path = write_official_checkpoint(tmp_path / f"3d_decode_gs{suffix}", state)
    yaml_path = tmp_path / "3d_decode_gs.yaml"
    yaml_path.write_text(official_gaussian_yaml(**SMALL, heads=4))
    dec = load_gaussian_decoder(path, yaml_path)
    assert dec.blocks[0].attn.heads == 4 and dec.window == 8 and dec.resolution == 64
    assert read_gaussian_yaml(yaml_path)["representation_config"]["num_gaussians"] == 32


def test_the_released_yaml_defaults_to_64_channels_per_head(state):
    dec = load_gaussian_decoder(state)  # no YAML: width 64 / 64 = 1 head
    assert dec.blocks[0].attn.heads == 1


def test_a_pickle_that_is_not_tensors_is_refused(tmp_path, state):
    path = tmp_path / "3d_decode_gs.pt"
    torch.save({**state, "extra": _NotWeights()}, path)
    with pytest.raises(CheckpointError):
        load_gaussian_decoder(path)


class _NotWeights:
    """Picklable, not a tensor: ``weights_only`` refuses it."""


def test_training_only_keys_are_left_out(state):
    extra = {
        "lpips_loss.net.net.slice1.0.weight": torch.zeros(64, 3, 3, 3),
        "lpips_loss.net.scaling_layer.shift": torch.zeros(1, 3, 1, 1),
        "ssim_loss.similarity": torch.zeros(1),
    }
    dec = load_gaussian_decoder({**state, **extra}, {"num_heads": 2})
    assert not any(k.startswith("lpips") for k in dec.state_dict())


def test_mismatched_keys_are_listed(state):
    broken = dict(state)
    del broken["blocks.1.norm2.weight"]
    broken["blocks.0.attn.to_qkv.bias"] = torch.zeros(192)
    broken["out_layer.bias"] = torch.zeros(447)
    with pytest.raises(StateDictMismatchError) as info:
        load_gaussian_decoder(broken, {"num_heads": 2})
    err = info.value
    assert err.missing == ["blocks.1.norm2.weight"]
    assert err.unexpected == ["blocks.0.attn.to_qkv.bias"]
    assert err.wrong_shape == [("out_layer.bias", (448,), (447,))]


def test_qk_norm_gains_are_loaded_when_the_checkpoint_has_them():
    state = official_gaussian_decoder_state_dict(**SMALL, heads=2, seed=4)
    dec = load_gaussian_decoder(state, {"qk_rms_norm": True})
    assert dec.blocks[0].attn.heads == 2
    torch.testing.assert_close(
        dec.blocks[1].attn.k_norm.weight, state["blocks.1.attn.k_rms_norm.gamma"]
    )


@pytest.mark.parametrize(
    "model, match",
    [
        ({"model_channels": 128}, "model_channels=128"),
        ({"num_blocks": 3}, "num_blocks=3"),
        ({"representation_config": {"num_gaussians": 16}}, "num_gaussians=16"),
        ({"attn_mode": "full"}, "attn_mode"),
        ({"pe_mode": "rope"}, "pe_mode"),
        ({"qk_rms_norm": True}, "qk_rms_norm"),
        ({"representation_config": {"voxel_size": 1.0}}, "voxel_size"),
        ({"representation_config": {"lr": {"_rotation": 1.0}}}, "lr"),
        ({"representation_config": {"scaling_activation": "exp"}}, "scaling_activation"),
    ],
)
def test_a_yaml_the_decoder_cannot_hold_is_a_config_error(state, model, match):
    with pytest.raises(ConfigError, match=match):
        load_gaussian_decoder(state, {"num_heads": 2, **model})


def test_a_state_dict_of_something_else_is_a_config_error():
    with pytest.raises(ConfigError, match="input_layer"):
        load_gaussian_decoder({"encoder.blocks.0.norm1.weight": torch.zeros(4)})


def test_scale_constants_come_from_the_yaml(state):
    rep = {"scaling_bias": 0.01, "3d_filter_kernel_size": 0.0}
    dec = load_gaussian_decoder(state, {"num_heads": 2, "representation_config": rep})
    (g,) = dec.to_gaussians(torch.zeros(1, 448), torch.tensor([[0, 1, 1, 1]]))
    torch.testing.assert_close(g.scales, torch.full((32, 3), 0.01))


# ------------------------------------------------------------------ atoken convert
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_atoken_convert_writes_a_folder_load_gaussian_decoder_reads(tmp_path, state, suffix):
    from click.testing import CliRunner

    from atoken.cli import main

    ckpt = write_official_checkpoint(tmp_path / f"3d_decode_gs{suffix}", state)
    yaml_path = tmp_path / "3d_decode_gs.yaml"
    yaml_path.write_text(official_gaussian_yaml(**SMALL, heads=2))
    out = tmp_path / "converted"
    args = ["convert", "official", str(ckpt), str(out), "--config", str(yaml_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "NOTICE.md",
        "gaussian_decoder.json",
        "gaussian_decoder.safetensors",
    ]
    assert "Model Derivative" in (out / "NOTICE.md").read_text()
    direct = load_gaussian_decoder(ckpt, yaml_path)
    again = load_gaussian_decoder(out)
    assert again.blocks[0].attn.heads == 2 and not again.training
    feats, coords = _voxels(n=40)
    with torch.no_grad():
        torch.testing.assert_close(again(feats, coords), direct(feats, coords), rtol=0, atol=0)
    refused = CliRunner().invoke(main, args)  # the folder holds a decoder: --overwrite
    assert refused.exit_code != 0 and "--overwrite" in refused.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0


def test_convert_never_writes_into_a_folder_of_other_files(tmp_path, state):
    from atoken.core.errors import OutputFolderError
    from atoken.official.gaussian_folder import convert_gaussian_decoder

    ckpt = write_official_checkpoint(tmp_path / "3d_decode_gs.pt", state)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(OutputFolderError, match=r"notes\.txt"):
        convert_gaussian_decoder(ckpt, out, {"num_heads": 2}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_damaged_converted_folder_is_a_checkpoint_error(tmp_path):
    (tmp_path / "gaussian_decoder.json").write_text('{"format": "something else"}')
    (tmp_path / "gaussian_decoder.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="gaussian_decoder"):
        load_gaussian_decoder(tmp_path)
