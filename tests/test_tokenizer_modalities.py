"""The tokenizer is modality-generic: own projections and heads, mixed batches, modality
parameters, replaced built-ins, tiling by default and old or partial checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import atoken
from atoken.core.errors import ConfigError, ModalityInputError, UnknownModalityError
from atoken.engine.checkpoint import CheckpointError
from atoken.modalities.video.tiling import reconstruct_tiled
from atoken.testing import registered_plugin
from atoken.tokenizer import Tokenizer


def _randomize(tok: Tokenizer) -> Tokenizer:
    with torch.no_grad():
        for p in tok.parameters():
            if p.ndim > 1:
                torch.nn.init.normal_(p, std=0.02)
    return tok.eval()


#: The tiny preset's modalities and the example plugin's depth (added by name).
DEPTH = ("image", "mesh", "video", "depth")


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return _randomize(Tokenizer.from_preset("tiny", modalities=DEPTH))


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
    base = Tokenizer.from_preset("tiny", modalities=DEPTH)
    params = {"depth": {"depth_mean": 2.5}}
    tok = Tokenizer.from_preset("tiny", modalities=DEPTH, modality_params=params)
    assert tok.modality("depth").value_mean == (2.5,)
    assert tok.config.to_dict()["modality_params"] == {"depth": {"depth_mean": 2.5}}
    depth = torch.full((16, 16), 2.5)
    assert torch.equal(tok.pack([depth], "depth").feats, torch.zeros(1, 256))
    assert not torch.equal(base.pack([depth], "depth").feats, torch.zeros(1, 256))


def test_a_parameter_the_modality_does_not_take_is_named():
    with pytest.raises(ConfigError, match=r"'depth' \(plugin 'depth'\).*'bogus'"):
        Tokenizer.from_preset("tiny", modalities=DEPTH, modality_params={"depth": {"bogus": 1}})


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
            Tokenizer.from_preset("tiny", modalities=["image", "needy"])
        assert isinstance(err.value.__cause__, TypeError)
        # A model not built for it never builds it: an installed broken plugin is harmless.
        tok = Tokenizer.from_preset("tiny")
    assert tok.config.modalities == ("image", "mesh", "video")


def test_a_modality_outside_the_config_needs_declaring():
    tok = Tokenizer.from_preset("tiny", modalities=["image"])
    assert tok.config.modalities == tok.modalities == ("image",)
    # The model holds exactly its modalities, even those that would need no parameters.
    for name in ("video", "depth"):
        with pytest.raises(UnknownModalityError, match=rf"modalities=\[\.\.\., '{name}'\]"):
            tok.encode([torch.rand(16, 16)], modality=name)


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


def test_a_saved_modality_whose_plugin_is_gone_is_named_and_can_be_left_out(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["modality_plugins"]["depth"] == "depth"  # the file names each one's plugin
    doc["config"]["modalities"].append("ghost")
    doc["modality_plugins"]["ghost"] = "atoken-ghost"
    (tmp_path / "config.json").write_text(json.dumps(doc))
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["projections.inputs.ghost.weight"] = torch.zeros(192, 7)
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'ghost' \(plugin 'atoken-ghost'\).*install"):
        Tokenizer.from_pretrained(tmp_path)
    loaded = Tokenizer.from_pretrained(tmp_path, modalities=DEPTH)  # ghost and its weights out
    assert "ghost" not in loaded.config.modalities
    assert torch.equal(loaded.heads["depth"].proj.weight, tok.heads["depth"].proj.weight)


def test_a_run_file_passes_modality_params_to_the_tokenizer(tmp_path):
    from atoken.engine.runconfig import load_run_file
    from atoken.train import build_tokenizer

    run = tmp_path / "run.toml"
    task = '[[tasks]]\nname = "image_reconstruction"\n'
    params = '[model]\npreset = "tiny"\nmodality_params = { depth = { depth_mean = 2.5 } }\n'
    run.write_text(params + task)
    tok = build_tokenizer(load_run_file(run))
    assert tok.modality("depth").value_mean == (2.5,)
    run.write_text("[model]\nmodality_params = { depth = { depht_mean = 2.5 } }\n" + task)
    with pytest.raises(ConfigError, match="depht_mean"):
        build_tokenizer(load_run_file(run))


def test_unknown_modality_keys_are_named_with_close_matches():
    with pytest.raises(ConfigError, match=r"modality_params names 'dpeth'.*'depth'"):
        Tokenizer.from_preset("tiny", modality_params={"dpeth": {"depth_mean": 1.0}})
    with pytest.raises(ConfigError, match="heads names 'vdieo'"):
        Tokenizer.from_preset("tiny", heads={"vdieo": "pixels"})
    with pytest.raises(ConfigError, match="JSON"):
        Tokenizer.from_preset("tiny", modality_params={"depth": {"depth_mean": object()}})


class _Keys(atoken.get_registry().modalities.get("depth")):
    name = "keys"


class _BadStats(atoken.get_registry().modalities.get("depth")):
    name = "badstats"

    def __init__(self, *, patch_size=16):
        super().__init__(patch_size=patch_size)
        self.value_mean, self.value_std = (0.5, 0.5, 0.5), (0.5, 0.5)


class _OddPlugin:
    def __init__(self, name, cls):
        self.name, self.cls = name, cls

    @atoken.hookimpl
    def register_modalities(self, register):
        register(self.name, self.cls)


@pytest.mark.parametrize(
    ("name", "cls", "match"),
    [("keys", _Keys, "module dict"), ("badstats", _BadStats, "value_mean and value_std")],
)
def test_a_modality_the_model_cannot_hold_is_a_config_error(name, cls, match):
    with registered_plugin(_OddPlugin(name, cls), name=f"{name}-plugin"):
        with pytest.raises(ConfigError, match=match):
            Tokenizer.from_preset("tiny", modalities=["image", name])


class _ShortHead(torch.nn.Module):
    def __init__(self, *, width, value_dim):
        super().__init__()
        self.proj = torch.nn.Linear(width, value_dim - 1)

    def forward(self, tokens, latent):
        return self.proj(tokens)


class _ShortHeadPlugin:
    @atoken.hookimpl
    def register_heads(self, register):
        register("short", _ShortHead)


def test_a_head_giving_the_wrong_width_is_named():
    with registered_plugin(_ShortHeadPlugin(), name="short-head"):
        tok = Tokenizer.from_preset("tiny", modalities=DEPTH, heads={"depth": "short"})
        with torch.no_grad(), pytest.raises(ConfigError, match="head _ShortHead gave"):
            tok.reconstruct([torch.rand(16, 16)], "depth")


def test_bad_arguments_are_typed_errors(tok):
    image = torch.rand(3, 16, 16)
    with pytest.raises(ModalityInputError, match="one name per sample"):
        tok.encode([image], modality=123)
    with pytest.raises(atoken.LatentValidationError, match="one sample"):
        tok.decode_tile([1])
    with torch.no_grad():
        latent = tok.encode([image])
    with pytest.raises(ModalityInputError, match="the latent's samples"):
        tok.encode(tok.pack([image]).replace(), modality="video")
    bad = latent.replace(meta=[{**latent.meta[0], "tile_steps": "4"}])
    with pytest.raises(atoken.LatentValidationError, match="tile_steps"):
        tok.decode(bad)
    depth = torch.rand(2, 16, 24)  # a [B, H, W] batch named once per sample
    with torch.no_grad():
        assert tok.encode(depth, modality=["depth", "depth"]).batch_size == 2


def test_a_per_call_tile_length_is_kept_for_decode(tok):
    clip = torch.rand(3, 32, 32, 32, generator=torch.Generator().manual_seed(6))  # 8 steps
    eight = Tokenizer.from_config(tok.config.with_overrides(tile_steps=8))
    eight.load_state_dict(tok.state_dict())
    one = Tokenizer.from_config(tok.config.with_overrides(tile_steps=None))
    one.load_state_dict(tok.state_dict())
    with torch.no_grad():
        latent = tok.encode([clip], "video", tile_steps=8)
        assert latent.meta[0]["tile_steps"] == 8
        assert torch.allclose(tok.decode(latent)[0], eight.eval().reconstruct([clip], "video")[0])
        untiled = tok.encode([clip], "video", tile_steps=0)
        assert untiled.meta[0]["tile_steps"] == 0
        want = one.eval().reconstruct([clip], "video")[0]
        assert torch.allclose(tok.decode(untiled)[0], want, atol=1e-5)


def test_training_decodes_long_clips_in_independent_tiles(tok):
    clip = torch.rand(3, 32, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        latent = tok.encode([clip], "video")
        independent = tok.decode(latent, kv_cache_steps=0)[0]
        cached = tok.decode(latent)[0]
        tok.train()
        try:
            trained = tok.decode(latent)[0]
        finally:
            tok.eval()
    assert torch.allclose(trained, independent, atol=1e-6)
    assert not torch.allclose(trained, cached, atol=1e-4)


def test_a_long_clip_file_and_a_mixed_batch_with_a_long_clip(tok, tmp_path):
    from atoken.data.video_io import write_video

    g = torch.Generator().manual_seed(8)
    clip = (torch.rand(3, 40, 32, 32, generator=g) * 255).to(torch.uint8)
    path = write_video(clip, tmp_path / "long.mp4", fps=8)
    image = torch.rand(3, 24, 40, generator=g)
    with torch.no_grad():
        from_file = tok.reconstruct([path], "video")[0]
        mixed = tok.encode([image, path], modality=["image", "video"])
        out = tok.decode(mixed)
        alone = tok.reconstruct([image])[0]
    assert from_file.shape == (3, 40, 32, 32)
    assert len(mixed.meta[1]["tiles"]) == 3 and mixed.meta[1]["tile_steps"] == 4
    assert torch.allclose(out[1], from_file, atol=1e-5)
    assert torch.allclose(out[0], alone, atol=1e-5)


def test_a_pretrained_tokenizer_can_gain_a_modality(tmp_path):
    torch.manual_seed(0)
    old = _randomize(Tokenizer.from_preset("tiny", modalities=["image", "video"]))
    old.save_pretrained(tmp_path)
    grown = Tokenizer.from_pretrained(tmp_path, modalities=["image", "video", "depth"]).eval()
    assert grown.projections.has("depth") and "depth" in grown.heads
    image = torch.rand(3, 32, 32)
    with torch.no_grad():
        assert torch.equal(grown.reconstruct([image])[0], old.reconstruct([image])[0])
        assert grown.reconstruct([torch.rand(20, 20)], "depth")[0].shape == (20, 20)
