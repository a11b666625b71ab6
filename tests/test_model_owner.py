"""One owner for the model (#30): a model holds exactly the modalities its config names,
whatever plugins are installed; the run file's ``[model]`` keys reach the tokenizer verbatim;
the constructors return eval mode."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys

import pytest
import torch

import atoken
from atoken.core.errors import ConfigError, UnknownModalityError
from atoken.engine.checkpoint import CheckpointError
from atoken.engine.runconfig import load_run_file
from atoken.plugins.builtin import DEFAULT_PLUGINS
from atoken.testing.plugins import registered_plugin
from atoken.tokenizer import Tokenizer
from atoken.train import build_tokenizer, task_modalities


def fingerprint(tok):
    """State-dict keys, parameter count, a hash of every weight, and what is registered
    (run here and, by its source, in a subprocess)."""
    state = tok.state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().float().contiguous().numpy().tobytes())
    return {
        "keys": sorted(state),
        "parameters": sum(p.numel() for p in tok.parameters()),
        "sha256": digest.hexdigest(),
        "registered": atoken.get_registry().modalities.names(),
    }


class _Sonar:
    """A throwaway plugin whose modality needs parameters of its own (a projection, a head)."""

    @atoken.hookimpl
    def register_modalities(self, register):
        from atoken_example_depth import DepthModality

        class Sonar(DepthModality):
            name = "sonar"

        register("sonar", Sonar)


def _installed_extras() -> list[str]:
    registry = atoken.get_registry().modalities
    return sorted({registry.plugin_of(n) for n in registry.names()} - {"atoken"})


def test_tiny_is_the_same_model_whatever_modality_plugins_are_installed(tmp_path):
    script = tmp_path / "bare.py"
    script.write_text(
        "import hashlib, json, torch, atoken\n"
        + inspect.getsource(fingerprint)
        + "torch.manual_seed(0)\n"
        + "print(json.dumps(fingerprint(atoken.Tokenizer.from_preset('tiny'))))\n"
    )
    registry = atoken.get_registry().modalities
    # every installed plugin that registers a modality of its own (depth, occupancy, ...)
    plugins = sorted({registry.plugin_of(n) for n in registry.names()} - set(DEFAULT_PLUGINS))
    env = {**os.environ, "ATOKEN_DISABLE_PLUGINS": ",".join(plugins)}
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    bare = json.loads(run.stdout.strip().splitlines()[-1])
    with registered_plugin(_Sonar(), name="sonar-plugin"):
        torch.manual_seed(0)
        tok = Tokenizer.from_preset("tiny")
        extra = fingerprint(tok)
    assert "sonar" in extra["registered"] and "sonar" not in bare["registered"]
    assert "depth" in extra["registered"] and "depth" not in bare["registered"]
    assert tok.modalities == ("image", "mesh", "video")
    assert extra["keys"] == bare["keys"]
    assert extra["parameters"] == bare["parameters"]
    assert extra["sha256"] == bare["sha256"]


def test_a_plugin_modality_is_added_by_name_and_its_checkpoint_names_the_plugin(tmp_path):
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    with registered_plugin(_Sonar(), name="sonar-plugin"):
        tok = atoken.create_tokenizer("tiny", modalities=["image", "sonar"])
        assert tok.modalities == ("image", "sonar")
        assert "projections.inputs.sonar.weight" in tok.state_dict()
        tok.save_pretrained(tmp_path / "tok")
        want = tok.encode([image]).feats
    with pytest.raises(CheckpointError, match=r"'sonar' \(plugin 'sonar-plugin'\)"):
        Tokenizer.from_pretrained(tmp_path / "tok")
    # Leaving it out loads the rest strictly, and the shared path is unchanged.
    loaded = Tokenizer.from_pretrained(tmp_path / "tok", modalities=["image"])
    assert loaded.modalities == ("image",)
    assert torch.equal(loaded.encode([image]).feats, want)
    with pytest.raises(UnknownModalityError, match=r"modalities=\[\.\.\., 'sonar'\]"):
        loaded.encode([torch.rand(16, 16)], modality="sonar")


def test_a_config_without_a_list_gets_the_built_in_modalities_only():
    config = atoken.Tokenizer.from_preset("tiny").config
    bare = atoken.core.config.TokenizerConfig(
        encoder=config.encoder, decoder=config.decoder, latent_dim=8
    )
    assert bare.modalities is None
    assert _installed_extras(), "the check below needs a plugin modality installed"
    assert atoken.create_tokenizer(bare).modalities == ("image", "mesh", "video")


@pytest.mark.parametrize("make", ["create_tokenizer", "from_preset", "from_pretrained"])
def test_constructors_return_eval_mode_and_encode_is_repeatable(make, tmp_path):
    torch.manual_seed(0)
    if make == "create_tokenizer":
        tok = atoken.create_tokenizer("tiny")
    elif make == "from_preset":
        tok = Tokenizer.from_preset("tiny")
    else:
        Tokenizer.from_preset("tiny").save_pretrained(tmp_path / "tok")
        tok = atoken.create_tokenizer(tmp_path / "tok")  # a folder is loaded
    assert not tok.training
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tok.encode([image]).feats, tok.encode([image]).feats)
    tok.train()  # fine-tuning: the KL posterior is sampled, so the check above could fail
    assert not torch.equal(tok.encode([image]).feats, tok.encode([image]).feats)


def _run_file(tmp_path, model: str, tasks: str = "") -> atoken.engine.runconfig.RunConfig:
    tasks = tasks or '[[tasks]]\nname = "image_reconstruction"\ndata = { source = "photos" }\n'
    path = tmp_path / "run.toml"
    path.write_text(f"[run]\nname = 'owner'\n\n[model]\n{model}\n\n{tasks}")
    return load_run_file(path)


def test_model_keys_pass_verbatim_over_the_preset_and_atoken_so_keeps_48_channels(tmp_path):
    cfg = _run_file(tmp_path, 'preset = "atoken-so"')
    with torch.device("meta"):  # the shapes only: nothing allocated
        tok = build_tokenizer(cfg)
    assert tok.config.latent_dim == 48 and tok.bottleneck.latent_dim == 48
    assert tok.config.head == atoken.core.config.load_preset("atoken-so").head
    assert tok.training  # built for training
    cfg = _run_file(tmp_path, 'preset = "tiny"\nlatent_dim = 12\ndecoder_depth = 1\nattention = ""')
    tok = build_tokenizer(cfg)
    assert tok.config.latent_dim == 12 and tok.config.decoder.depth == 1
    assert tok.config.attention is None
    with pytest.raises(ConfigError, match=r"unknown key 'latent_dims'.*'latent_dim'"):
        _run_file(tmp_path, 'preset = "tiny"\nlatent_dims = 12')
    with pytest.raises(ConfigError, match=r"\['latent_dim'\] given both"):
        _run_file(tmp_path, "latent_dim = 8\noverrides = { latent_dim = 4 }")


def test_the_model_gets_the_modalities_its_tasks_train(tmp_path):
    tasks = (
        '[[tasks]]\nname = "image_reconstruction"\ndata = { source = "photos" }\n\n'
        '[[tasks]]\nname = "depth_reconstruction"\n'
    )
    cfg = _run_file(tmp_path, 'preset = "tiny"\nmodalities = ["image"]', tasks)
    assert task_modalities(cfg) == ("image", "depth")
    tok = build_tokenizer(cfg)
    assert tok.modalities == ("image", "depth")
    assert "projections.inputs.depth.weight" in tok.state_dict()


#: Keys and shapes of every built-in preset (sha256 of "key [shape]" lines, sorted), recorded
#: with the code before #30 on a machine with only the built-in modalities installed.
PRESET_STATE = {
    "atoken-so": (565, "9ed2ffe873b0665bcdd09df0b9bd0b570f9a8a262954f451f31250fbaa0b2a1b"),
    "base": (265, "81e9802e5cb8e20b31c26832ea0c00ef237613d6aa048096e73a0ab2c04fa87c"),
    "small": (185, "7ac6964f93f89119b0382f8aaf78fa904a635f1c1c287d712ca3b5d68e56d3a0"),
    "so400m": (565, "d1e7f215597a771694162aee34411e22c5de84c54a17e59df0dfdaaf4e3b033b"),
    "tiny": (105, "d94d719b6b6c53957b4a3c8498bb5776b0ec67b678bf4e42da18b5ef785d80dc"),
}


@pytest.mark.parametrize("preset", sorted(PRESET_STATE))
def test_every_built_in_preset_keeps_its_state_dict_keys(preset):
    assert _installed_extras(), "plugin modalities are installed: they must not show up"
    with torch.device("meta"):  # shapes only
        state = Tokenizer.from_preset(preset).state_dict()
    lines = "\n".join(f"{k} {list(state[k].shape)}" for k in sorted(state))
    got = (len(state), hashlib.sha256(lines.encode()).hexdigest())
    assert got == PRESET_STATE[preset]
