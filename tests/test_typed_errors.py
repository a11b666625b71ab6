"""Weak errors made typed, with the field named (#16 item 6): each bad input below once gave
a raw RuntimeError/TypeError/KeyError from deep inside."""

from __future__ import annotations

import pytest
import torch

from atoken import ConfigError, LatentValidationError, SparseLatent, Tokenizer
from atoken.core.coords import raster_coords

COORDS = raster_coords((1, 2, 2))  # 4 tokens


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.from_preset("tiny", depth=1, decoder_depth=1).eval()


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SparseLatent(torch.zeros(4, 3, device="meta"), COORDS, [4]), "feats"),
        (lambda: SparseLatent(torch.zeros(4, 3), COORDS, ["2", 2]), "seqlens"),
        (lambda: SparseLatent(torch.zeros(4, 3), COORDS, [2**70, 2]), "seqlens"),
        (lambda: SparseLatent(torch.zeros(4, 3), COORDS, [True, 3]), "seqlens"),
        (lambda: SparseLatent(torch.zeros(4, 3), COORDS, 4), "seqlens"),
        (lambda: SparseLatent(torch.zeros(4, 3), COORDS, [4], modality=""), "modality"),
        (lambda: SparseLatent(torch.zeros(4, 3), COORDS, [2, 2]).select([0.7]), "seqlens"),
        (lambda: SparseLatent(torch.zeros(4, 3), COORDS, [2, 2]).select("0"), "seqlens"),
    ],
)
def test_bad_latent_parts_name_the_field(build, field):
    with pytest.raises(LatentValidationError) as info:
        build()
    assert info.value.field == field


def test_decode_takes_latents_of_any_float_dtype_and_of_no_samples(tiny):
    with torch.no_grad():
        latent = tiny.encode([torch.rand(3, 32, 32)])
        for dtype in (torch.float16, torch.bfloat16):
            assert tiny.decode(latent.to(dtype=dtype))[0].shape == (3, 32, 32)
        assert tiny.decode(latent.select([])) == []
    with pytest.raises(LatentValidationError, match="decode takes a SparseLatent"):
        tiny.decode({"feats": 1})


def test_unknown_bottleneck_params_are_named():
    with pytest.raises(ConfigError, match=r"bottleneck_params: 'kl' takes no \['nope'\]"):
        Tokenizer.from_preset("tiny", depth=1, decoder_depth=1, bottleneck_params={"nope": 1})


def test_a_plugin_hook_calling_sys_exit_is_named():
    import sys

    from atoken.core.errors import PluginLoadError
    from atoken.plugins.hookspecs import hookimpl
    from atoken.plugins.manager import get_plugin_manager, get_registry, refresh

    class Exits:
        @hookimpl
        def register_losses(self, register):
            sys.exit(3)

    pm = get_plugin_manager()
    pm.register(Exits(), name="exits-on-load")
    try:
        refresh()
        with pytest.raises(PluginLoadError, match=r"'exits-on-load'.*SystemExit: 3"):
            get_registry()
    finally:
        pm.unregister(name="exits-on-load")
        refresh()
    assert len(get_registry().losses) > 0  # healthy again once the plugin is gone


@pytest.mark.parametrize("drop", ["losses", "optimizer"])
def test_a_checkpoint_missing_a_part_is_refused_naming_it(tmp_path, drop):
    from atoken.engine.checkpoint import CheckpointError, load_checkpoint

    state = {"step": 3, "model": {}, "optimizer": {}, "losses": torch.zeros(3), "nonfinite": 0}
    del state[drop]
    torch.save(state, tmp_path / "step_00000003.pt")
    with pytest.raises(CheckpointError, match=f"lacks \\['{drop}'\\]"):
        load_checkpoint(tmp_path / "step_00000003.pt")


def _disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import atoken.engine.checkpoint as ckpt

    state = {"step": 1, "model": {}, "optimizer": {}, "losses": torch.zeros(1), "nonfinite": 0}
    first = ckpt.save_checkpoint(state, tmp_path, 1, keep=2)
    monkeypatch.setattr(ckpt.torch, "save", _disk_full)
    with pytest.raises(ckpt.CheckpointError, match=r"No space left.*previous checkpoints"):
        ckpt.save_checkpoint({**state, "step": 2}, tmp_path, 2, keep=2)
    assert ckpt.list_checkpoints(tmp_path) == [first] and not list(tmp_path.glob(".*.tmp"))
    assert ckpt.load_checkpoint(first)["step"] == 1


def test_a_full_disk_during_an_import_keeps_what_was_committed(tmp_path, monkeypatch):
    import numpy as np
    import zarr

    from atoken.data import MediaStore, MediaWriter, StoreError

    url = tmp_path / "s.zarr"
    with pytest.raises(StoreError, match=r"No space left.*the 2 samples committed"):
        with MediaWriter(url, flush_samples=2) as w:
            for i in range(4):
                if i == 2:
                    monkeypatch.setattr(zarr.Array, "__setitem__", _disk_full)
                w.add(f"s{i}", np.full((2, 2, 3), i, np.uint8))
    monkeypatch.undo()
    assert MediaStore(url).names == ("s0", "s1")


def test_a_huge_override_is_a_config_error_naming_the_key_before_allocating(tmp_path):
    """#36 item 6: ``width = 24000000`` once died in the allocator (295 GB) naming no key."""
    from click.testing import CliRunner

    from atoken.cli import main

    out = tmp_path / "out"
    run = tmp_path / "run.toml"
    run.write_text(
        f'[run]\nout_dir = "{out}"\n[model]\npreset = "tiny"\n'
        "overrides = { width = 24000000, depth = 1 }\n"
        '[train]\nsteps = 1\nprecision = "fp32"\nprogress = false\n'
        '[[tasks]]\nname = "image_reconstruction"\n'
        'data = { source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }\n'
    )
    result = CliRunner().invoke(main, ["train", str(run)])
    assert result.exit_code != 0
    assert "ConfigError" in result.output and "width = 24000000" in result.output, result.output
    assert "parameters" in result.output and "TB as float32" in result.output
    assert "depth = 1" in result.output  # overridden too
    assert "latent_dim" not in result.output  # passed by every run file, but the preset's
    assert not out.exists()


def test_a_config_too_large_for_the_memory_names_its_sizes(monkeypatch):
    from atoken.core import model_size
    from atoken.core.config import load_preset

    config = load_preset("tiny")
    count = model_size.parameter_count(config)
    monkeypatch.setattr(model_size, "memory_limit", lambda: 4 * count - 1)  # fp32: 1 byte short
    with pytest.raises(ConfigError, match=rf"about {count:,} parameters .*encoder depth 4, width"):
        Tokenizer(config)
    with pytest.raises(ConfigError, match=r"overrides latent_dim = 64 \(on preset 'tiny'\)"):
        Tokenizer.from_preset("tiny", latent_dim=64, decoder_final_norm=False)
    monkeypatch.setattr(model_size, "memory_limit", lambda: 4 * count)
    Tokenizer(config)  # exactly fits
    with torch.device("meta"):  # a meta build allocates nothing: never refused
        monkeypatch.setattr(model_size, "memory_limit", lambda: 1)
        Tokenizer(config)


def test_zero_shot_without_a_text_encoder_says_how_to_get_one():
    from atoken.zeroshot import classify

    tok = Tokenizer.from_preset("tiny").eval()
    with pytest.raises(ConfigError, match="--text-tower"):
        classify(tok, [torch.rand(3, 32, 32)], ["a cat", "a dog"])
