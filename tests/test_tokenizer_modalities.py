"""The tokenizer is modality-generic: own projections and heads, mixed batches, modality
parameters, replaced built-ins, tiling by default and old or partial checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import atoken
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.testing import registered_plugin
from atoken.tiling import reconstruct_tiled
from atoken.tokenizer import Tokenizer


def _randomize(tok: Tokenizer) -> Tokenizer:
    with torch.no_grad():
        for p in tok.parameters():
            if p.ndim > 1:
                torch.nn.init.normal_(p, std=0.02)
    return tok.eval()


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return _randomize(Tokenizer.from_preset("tiny"))


def _samples():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 40, 56, generator=g)
    clip = torch.rand(3, 8, 32, 48, generator=g)
    depth = torch.rand(40, 56, generator=g) * 5
    return [image, clip, depth], ["image", "video", "depth"]


def test_depth_has_its_own_projection_and_head_and_images_share_the_path(tok):
    assert set(tok.config.modalities) >= {"image", "video", "depth"}
    assert tok.projections.has("depth") and not tok.projections.has("image")
    assert tok.heads["depth"].value_dim == 16 * 16 and "image" not in tok.heads
    assert tok.head_for("image") is tok.head_for("video") is tok.head
    with torch.no_grad():
        out = tok.decode(tok.encode([torch.rand(40, 56)], modality="depth"))
    assert out[0].shape == (40, 56)


def test_a_mixed_batch_encodes_decodes_and_embeds_per_sample(tok):
    samples, names = _samples()
    with torch.no_grad():
        latent = tok.encode(samples, modality=names)
        decoded = tok.decode(latent)
        emb = tok.embed(samples, modality=names)
        alone = [tok.encode([s], modality=n) for s, n in zip(samples, names, strict=True)]
        alone_emb = torch.cat(
            [tok.embed([s], modality=n) for s, n in zip(samples, names, strict=True)]
        )
    assert latent.modality == tuple(names)
    assert [tuple(d.shape) for d in decoded] == [(3, 40, 56), (3, 8, 32, 48), (40, 56)]
    # Samples do not interact: the mixed batch equals each sample alone.
    for b, part in enumerate(alone):
        assert torch.allclose(latent.select([b]).feats, part.feats, atol=1e-5)
    assert torch.allclose(emb, alone_emb, atol=1e-5)
    # A packed latent of separately encoded samples decodes each with its own head.
    packed = atoken.SparseLatent.pack(alone)
    with torch.no_grad():
        for got, want in zip(tok.decode(packed), decoded, strict=True):
            assert torch.allclose(got, want, atol=1e-5)


def test_modality_names_must_match_the_samples(tok):
    samples, names = _samples()
    with pytest.raises(ModalityInputError, match="3 samples"):
        tok.encode(samples, modality=names[:2])
    with pytest.raises(ModalityInputError, match="registered name"):
        tok.encode(samples[:1], modality="")


def test_modality_params_reach_the_modality_and_the_config():
    base = Tokenizer.from_preset("tiny")
    tok = Tokenizer.from_preset("tiny", modality_params={"depth": {"depth_mean": 2.5}})
    assert tok.modality("depth").value_mean == (2.5,)
    assert tok.config.to_dict()["modality_params"] == {"depth": {"depth_mean": 2.5}}
    depth = torch.full((16, 16), 2.5)
    assert torch.equal(tok.pack([depth], "depth").feats, torch.zeros(1, 256))
    assert not torch.equal(base.pack([depth], "depth").feats, torch.zeros(1, 256))


def test_a_parameter_the_modality_does_not_take_is_named():
    with pytest.raises(ConfigError, match=r"'depth' \(plugin 'depth'\).*'bogus'"):
        Tokenizer.from_preset("tiny", modality_params={"depth": {"bogus": 1}})


class _NeedsArgument(atoken.Modality):
    name = "needy"

    def __init__(self, *, radius, **_):  # a required argument nobody passes
        self.value_dim = 8

    def patchify(self, sample):  # pragma: no cover - never built
        raise NotImplementedError

    unpatchify = grid_shape = examples = invalid_examples = patchify


class _NeedyPlugin:
    @atoken.hookimpl
    def register_modalities(self, register):
        register("needy", _NeedsArgument)


def test_a_factory_that_fails_is_a_config_error_naming_the_plugin():
    with registered_plugin(_NeedyPlugin(), name="needy-plugin"):
        with pytest.raises(ConfigError, match="'needy' \\(plugin 'needy-plugin'\\)") as err:
            Tokenizer.from_preset("tiny")
    assert isinstance(err.value.__cause__, TypeError)


def test_a_modality_outside_the_config_needs_declaring():
    tok = Tokenizer.from_preset("tiny", modalities=["image"])
    assert tok.config.modalities == ("image",)
    assert tok.modality("video").name == "video"  # shared path: no parameters needed
    with pytest.raises(ConfigError, match=r"modalities=\[\.\.\., 'depth'\]"):
        tok.encode([torch.rand(16, 16)], modality="depth")


def test_other_modalities_do_not_change_image_results():
    torch.manual_seed(0)
    only = Tokenizer.from_preset("tiny", modalities=["image"]).eval()
    torch.manual_seed(0)
    every = Tokenizer.from_preset("tiny").eval()
    image = torch.rand(3, 48, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(only.encode([image]).feats, every.encode([image]).feats)


class _Replacement:
    """A plugin's own ``image`` modality (16 x 16 grayscale patches) replacing the built-in."""

    @atoken.hookimpl
    def register_modalities(self, register):
        from atoken_example_depth import DepthModality

        class GrayImage(DepthModality):
            name = "image"

        register("image", GrayImage)


def test_a_plugin_can_replace_the_built_in_default_modality(fresh_plugins):
    fresh_plugins.setenv("ATOKEN_DISABLE_PLUGINS", "atoken.modalities.image")
    with registered_plugin(_Replacement(), name="gray-image"):
        tok = _randomize(Tokenizer.from_preset("tiny"))
        with torch.no_grad():
            out = tok.reconstruct([torch.rand(20, 30)])  # the default modality, by name
        assert out[0].shape == (20, 30) and tok.projections.has("image")


def test_a_long_clip_is_tiled_by_default_and_matches_the_streaming_path(tok):
    clip = torch.rand(3, 40, 32, 32, generator=torch.Generator().manual_seed(4))  # 10 steps
    seen = []
    handle = tok.encoder.transformer.register_forward_pre_hook(
        lambda module, args: seen.append(int(args[0].shape[0]))
    )
    try:
        with torch.no_grad():
            latent = tok.encode([clip], "video")
            recon = tok.decode(latent)[0]
    finally:
        handle.remove()
    assert latent.meta[0]["tile_steps"] == 4 and int(latent.coords[:, 0].max()) == 9
    assert max(seen) == 4 * 2 * 2  # one tile: 4 steps x 2 x 2 tokens
    streamed = reconstruct_tiled(tok, clip, tile_frames=16, kv_cache_steps=4)
    assert recon.shape == clip.shape and torch.allclose(recon, streamed, atol=1e-5)


def test_tile_steps_none_encodes_in_one_pass(tok):
    clip = torch.rand(3, 40, 32, 32, generator=torch.Generator().manual_seed(4))
    one = Tokenizer.from_config(tok.config.with_overrides(tile_steps=None))
    one.load_state_dict(tok.state_dict())
    with torch.no_grad():
        latent = one.eval().encode([clip], "video")
        tiled = tok.encode([clip], "video")
    assert "tile_steps" not in latent.meta[0]
    assert not torch.allclose(latent.feats, tiled.feats, atol=1e-4)  # attention spans tiles


def test_a_file_without_recorded_modalities_loads(tok, tmp_path):
    torch.manual_seed(0)
    old = _randomize(Tokenizer.from_preset("tiny", modalities=["image", "video"]))
    old.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    del doc["config"]["modalities"]  # as written before modalities were recorded
    (tmp_path / "config.json").write_text(json.dumps(doc))
    loaded = Tokenizer.from_pretrained(tmp_path).eval()
    assert "depth" not in loaded.config.modalities and "image" in loaded.config.modalities
    image = torch.rand(3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct([image])[0], old.reconstruct([image])[0])


def test_a_saved_modality_whose_plugin_is_gone_is_dropped_with_a_warning(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["config"]["modalities"].append("ghost")
    (tmp_path / "config.json").write_text(json.dumps(doc))
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["projections.inputs.ghost.weight"] = torch.zeros(192, 7)
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.warns(UserWarning, match="ghost"):
        loaded = Tokenizer.from_pretrained(tmp_path)
    assert "ghost" not in loaded.config.modalities
    assert torch.equal(loaded.heads["depth"].proj.weight, tok.heads["depth"].proj.weight)


def test_a_run_file_passes_modality_params_to_the_tokenizer(tmp_path):
    from atoken.core.runconfig import load_run_file
    from atoken.train import build_tokenizer

    run = tmp_path / "run.toml"
    run.write_text('[model]\npreset = "tiny"\nmodality_params = { depth = { depth_mean = 2.5 } }\n')
    tok = build_tokenizer(load_run_file(run))
    assert tok.modality("depth").value_mean == (2.5,)
    run.write_text("[model]\nmodality_params = { depth = { depht_mean = 2.5 } }\n")
    with pytest.raises(ConfigError, match="depht_mean"):
        build_tokenizer(load_run_file(run))
