"""The example third-party plugin is discovered, passes the contract and can be disabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import torch

import atoken
from atoken.core.projection import ModalityProjections
from atoken.testing.contracts import ModalityContract


def test_discovered_through_its_entry_point():
    eps = [e for e in metadata.entry_points(group="atoken") if e.name == "depth"]
    assert eps and eps[0].dist.name == "atoken-example-depth"
    assert atoken.get_registry().modalities.plugin_of("depth") == "depth"


class TestDepthContract(ModalityContract):
    modality_name = "depth"


def test_disappears_under_disable_env():
    env = dict(os.environ, ATOKEN_DISABLE_PLUGINS="depth")
    cmd = [sys.executable, "-m", "atoken.cli", "plugins", "--json"]
    report = json.loads(
        subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    )
    assert "depth" not in {p["name"] for p in report["plugins"]}
    assert "depth" not in {c["name"] for c in report["components"]["modalities"]}
    assert "image" in {c["name"] for c in report["components"]["modalities"]}


def test_one_channel_modality_gets_its_own_projection():
    depth = atoken.get_registry().modalities.create("depth")
    image = atoken.get_registry().modalities.create("image")
    proj = ModalityProjections(patch_dim=image.value_dim, width=32)
    assert proj.add("depth", depth.value_dim) is True
    assert proj.add("image", image.value_dim) is False and not proj.has("image")
    latent = depth.pack(depth.examples(0))
    tokens = proj.embed("depth", latent.feats)
    assert tokens.shape == (latent.num_tokens, 32)
    assert proj.unembed("depth", tokens).shape == latent.feats.shape
    tokens.sum().backward()
    assert proj.inputs["depth"].weight.grad is not None
    assert torch.isfinite(proj.inputs["depth"].weight.grad).all()
