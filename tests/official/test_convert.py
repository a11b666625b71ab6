"""The official-checkpoint converter through the public entry points: strict mapping, typed
errors naming the keys, .pt and .safetensors files, the YAML, and the ``atoken convert
official`` command producing a folder ``Tokenizer.from_pretrained`` loads."""

from __future__ import annotations

import warnings

import pytest
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.core.errors import ConfigError, StateDictMismatchError
from atoken.engine.checkpoint import CheckpointError
from atoken.official import ATTRIBUTION, atoken_key, official_key, to_official
from atoken.testing.official import official_state_dict, official_yaml, write_official_checkpoint

SMALL = {"width": 64, "heads": 2, "depth": 2, "mlp": 96}


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return official_state_dict(**SMALL, seed=1)


class _NotWeights:
    """A picklable object that is not a tensor: ``weights_only`` must refuse it."""


def _yaml(tmp_path, fsq=False, **changes):
    path = tmp_path / ("sod.yaml" if fsq else "soc.yaml")
    path.write_text(official_yaml(**{**SMALL, **changes}, fsq=fsq))
    return path


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 48, 64, generator=g)


def test_the_key_table_covers_every_official_key_both_ways():
    full = official_state_dict(width=32, heads=4, depth=27, mlp=8)
    assert len(full) == 563  # the So/C and So/D key count of the release
    for key in full:
        ours = atoken_key(key)
        assert ours is not None, key
        assert official_key(ours) == key


def test_the_so400m_checkpoint_shapes_give_the_released_parameter_counts():
    """563 keys and 845,738,048 parameters (s1: 845,682,752), read off the official classes;
    the converted config (built on the meta device: no memory) holds exactly as many."""
    from atoken.official import infer_config

    for latent, total in ((48, 845_738_048), (32, 845_682_752)):
        state = official_state_dict(
            width=1152, heads=16, depth=27, mlp=4304, latent=latent, device="meta"
        )
        assert len(state) == 563 and sum(v.numel() for v in state.values()) == total
        config = infer_config(state)  # heads: 16 by default, 72 per head
        assert config.name == "official-soc" and config.encoder.backbone.head_dim == 72
        with torch.device("meta"):
            tok = atoken.Tokenizer(config)
        assert sum(p.numel() for p in tok.state_dict().values()) == total
        enc = sum(v.numel() for k, v in state.items() if k.startswith("encoder."))
        dec = sum(v.numel() for k, v in state.items() if k.startswith("decoder."))
        assert enc == 430_542_272  # incl. the MAP head
        assert dec == 415_085_184 + (0 if latent == 48 else -16 * 1152)


def test_from_official_fills_every_parameter_from_the_checkpoint(state):
    tok = atoken.Tokenizer.from_official(state, heads=2)
    ours = tok.state_dict()
    back = dict(to_official(k, v) for k, v in ours.items())
    assert back.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0)
    cfg = tok.config
    assert (cfg.encoder.backbone.depth, cfg.encoder.backbone.width) == (2, 64)
    assert (cfg.encoder.backbone.heads, cfg.decoder.heads) == (2, 2)
    assert cfg.bottleneck == "kl" and cfg.latent_dim == 48
    assert cfg.decoder_pos_table and cfg.decoder.qk_norm_per_head
    assert not tok.training  # converted for inference


def test_the_position_table_entry_of_row_r_column_c_is_read_at_that_patch(state):
    tok = atoken.Tokenizer.from_official(state, heads=2)
    flat = state["encoder.pos_embedder.position_embedding.weight"]  # [256, C]
    r, c = 3, 11
    torch.testing.assert_close(tok.encoder.pos_table.weight[r, c], flat[r * 16 + c])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_files_load_with_the_yaml(tmp_path, state, suffix):
    path = write_official_checkpoint(tmp_path / f"atoken-sod{suffix}", state)
    tok = atoken.Tokenizer.from_official(path, _yaml(tmp_path, fsq=True))
    assert tok.config.bottleneck == "fsq"
    assert dict(tok.config.bottleneck_params) == {
        "levels": [4, 4, 4, 4, 4, 4],
        "groups": 8,
        "bias": False,
        "logvar": True,
    }
    tokens = tok.tokenize([_image()])
    assert tokens.ids.shape == (12, 8) and int(tokens.ids.max()) < 4096


def test_stage_one_latent_32_loads():
    tok = atoken.Tokenizer.from_official(official_state_dict(**SMALL, latent=32), heads=2)
    assert tok.config.latent_dim == 32
    assert tok.encode([_image()]).feats.shape == (12, 32)


def test_a_missing_key_is_named(state):
    broken = dict(state)
    del broken["encoder.blocks.1.attn.to_out.bias"]
    with pytest.raises(StateDictMismatchError) as err:
        atoken.Tokenizer.from_official(broken, heads=2)
    assert err.value.missing == ["encoder.transformer.blocks.1.attn.proj.bias"]
    assert not err.value.unexpected and not err.value.wrong_shape
    assert "encoder.transformer.blocks.1.attn.proj.bias" in str(err.value)


def test_an_unexpected_key_is_named(state):
    broken = {**state, "encoder.head.extra.weight": torch.zeros(3)}
    with pytest.raises(StateDictMismatchError) as err:
        atoken.Tokenizer.from_official(broken, heads=2)
    assert err.value.unexpected == ["encoder.head.extra.weight"]
    assert not err.value.missing


def test_a_wrong_shape_is_named(state):
    broken = {**state, "decoder.blocks.0.mlp.mlp.2.weight": torch.zeros(64, 95)}
    with pytest.raises(StateDictMismatchError) as err:
        atoken.Tokenizer.from_official(broken, heads=2)
    assert err.value.wrong_shape == [("decoder.blocks.0.mlp.mlp.2.weight", (64, 96), (64, 95))]
    assert not err.value.missing and not err.value.unexpected


def test_a_yaml_that_disagrees_with_the_shapes_is_an_error(tmp_path, state):
    with pytest.raises(ConfigError, match="encoder_num_blocks"):
        atoken.Tokenizer.from_official(state, _yaml(tmp_path, depth=3))


def test_pickles_are_never_loaded(tmp_path, state):
    path = tmp_path / "evil.pt"
    torch.save({"weights": state["proj.weight"], "cfg": _NotWeights()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        atoken.Tokenizer.from_official(path, heads=2)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state}, wrapped)
    with pytest.raises(CheckpointError, match="wrapped"):
        atoken.Tokenizer.from_official(wrapped, heads=2)


def test_cli_writes_a_folder_from_pretrained_loads(tmp_path, state):
    ckpt = write_official_checkpoint(tmp_path / "atoken-soc.pt", state)
    out = tmp_path / "converted"
    licence = tmp_path / "MODEL-LICENSE"
    licence.write_text("the user's copy of the agreement")
    args = ["convert", "official", str(ckpt), str(out), "--config", str(_yaml(tmp_path))]
    result = CliRunner().invoke(main, [*args, "--licence", str(licence)])
    assert result.exit_code == 0, result.output
    assert (out / "MODEL-LICENSE").read_text() == licence.read_text()
    notice = (out / "NOTICE.md").read_text()
    assert ATTRIBUTION in notice and "Model Derivative" in notice and "atoken-soc.pt" in notice
    loaded = atoken.Tokenizer.from_pretrained(out).eval()
    direct = atoken.Tokenizer.from_official(ckpt, heads=2)
    image = _image()
    with torch.no_grad():
        rec = loaded.reconstruct([image])[0]
        torch.testing.assert_close(rec, direct.reconstruct([image])[0])
        torch.testing.assert_close(loaded.embed([image]), direct.embed([image]))
    assert rec.shape == image.shape and torch.isfinite(rec).all()


def test_cli_reports_a_broken_checkpoint(tmp_path, state):
    broken = dict(state)
    del broken["proj.weight"]
    ckpt = write_official_checkpoint(tmp_path / "broken.safetensors", broken)
    result = CliRunner().invoke(
        main, ["convert", "official", str(ckpt), str(tmp_path / "o"), "--heads", "2"]
    )
    assert result.exit_code != 0
    assert "proj.weight" in result.output


def test_a_bf16_checkpoint_is_upcast_without_change(tmp_path):
    state = official_state_dict(**SMALL, dtype=torch.bfloat16)
    path = write_official_checkpoint(tmp_path / "bf16.safetensors", state)
    tok = atoken.Tokenizer.from_official(path, heads=2)
    weight = tok.decoder.transformer.blocks[1].mlp.fc1.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, state["decoder.blocks.1.mlp.mlp.0.weight"].float())


def test_a_ready_config_is_used_as_given(state):
    tok = atoken.Tokenizer.from_official(state, heads=2)
    again = atoken.Tokenizer.from_official(state, tok.config)
    assert again.config == tok.config
    with pytest.raises(ConfigError, match="heads"):
        atoken.Tokenizer.from_official(state, tok.config, heads=2)


def _convert(ckpt, out, *extra):
    return CliRunner().invoke(
        main, ["convert", "official", str(ckpt), str(out), "--heads", "2", *extra]
    )


def test_cli_never_writes_into_a_folder_of_user_files(tmp_path, state):
    """#36 item 5: the user's own config.json is not replaced, with or without --overwrite."""
    ckpt = write_official_checkpoint(tmp_path / "atoken-soc.safetensors", state)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra in ((), ("--overwrite",)):
        result = _convert(ckpt, out, *extra)
        assert result.exit_code != 0
        assert "OutputFolderError" in result.output and str(out) in result.output, result.output
        assert "not an atoken tokenizer folder" in result.output
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "config.json").unlink()
    (out / "notes.txt").unlink()  # an empty folder is fine
    assert _convert(ckpt, out).exit_code == 0


def test_cli_replaces_a_tokenizer_folder_only_with_overwrite(tmp_path, state):
    ckpt = write_official_checkpoint(tmp_path / "atoken-soc.safetensors", state)
    out = tmp_path / "converted"
    assert _convert(ckpt, out).exit_code == 0
    (out / "README.md").write_text("my notes on these weights")
    weights = (out / "model.safetensors").read_bytes()
    again = _convert(ckpt, out)
    assert again.exit_code != 0
    assert "OutputFolderError" in again.output and "--overwrite" in again.output, again.output
    assert str(out) in again.output
    replaced = _convert(ckpt, out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (out / "README.md").read_text() == "my notes on these weights"  # kept
    assert (out / "model.safetensors").read_bytes() == weights  # the same conversion again
    atoken.Tokenizer.from_pretrained(out)


def test_convert_official_takes_overwrite_and_refuses_a_file(tmp_path, state):
    from atoken.core.errors import OutputFolderError
    from atoken.official import convert_official

    ckpt = write_official_checkpoint(tmp_path / "atoken-soc.safetensors", state)
    out = convert_official(ckpt, tmp_path / "out", heads=2)
    with pytest.raises(OutputFolderError, match="overwrite") as info:
        convert_official(ckpt, out, heads=2)
    assert info.value.folder == str(out)
    assert convert_official(ckpt, out, heads=2, overwrite=True) == out
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        convert_official(ckpt, a_file, heads=2, overwrite=True)


def test_nonfinite_weights_warn_naming_the_tensors(tmp_path, state):
    from atoken.core.errors import NonFiniteWeightsWarning

    bad = {k: v.clone() for k, v in state.items()}
    names = sorted(k for k, v in bad.items() if v.is_floating_point())[:7]
    for i, name in enumerate(names):
        bad[name].view(-1)[0] = float("nan") if i % 2 else float("inf")
    ckpt = write_official_checkpoint(tmp_path / "nan.safetensors", bad)
    with pytest.warns(NonFiniteWeightsWarning, match=rf"7 of {len(bad)} tensors") as caught:
        atoken.Tokenizer.from_official(ckpt, heads=2)
    message = str(caught[0].message)
    assert all(n in message for n in names[:5]) and "and 2 more" in message
    result = _convert(ckpt, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "NonFiniteWeightsWarning" in result.output and names[0] in result.output
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWeightsWarning)  # finite weights: silent
        atoken.Tokenizer.from_official(state, heads=2)


def test_a_wrapped_checkpoint_says_which_key_to_save(tmp_path, state):
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state}, wrapped)
    result = _convert(wrapped, tmp_path / "out")
    assert result.exit_code != 0
    assert "save state['state_dict'] alone" in result.output, result.output
    assert "{" not in result.output, result.output
    assert not (tmp_path / "out").exists()
