"""The example third-party plugin is discovered, passes the contract and can be disabled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

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
    tokens.sum().backward()
    assert proj.inputs["depth"].weight.grad is not None
    assert torch.isfinite(proj.inputs["depth"].weight.grad).all()


def test_the_readme_session_runs_through_the_tokenizer():
    """The acceptance command: a [H, W] depth map at native value size, own projection/head."""
    code = (
        "import atoken, torch; "
        "t = atoken.Tokenizer.from_preset('tiny', modalities=['image', 'depth']); "
        "l = t.encode([torch.rand(40, 56)], modality='depth'); print(t.decode(l)[0].shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "torch.Size([40, 56])"


def test_depth_trains_through_its_own_projection_and_head():
    torch.manual_seed(0)
    params = {"depth": {"depth_std": 5.0}}
    tok = atoken.Tokenizer.from_preset("tiny", modalities=["depth"], modality_params=params)
    tok.train()
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(32, 48, generator=g) * 10, torch.rand(20, 20, generator=g) * 10]
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        recon, _, _ = tok.autoencode(maps, "depth")
        loss = sum(((r - m) ** 2).mean() for r, m in zip(recon, maps, strict=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert tok.projections.inputs["depth"].weight.grad is not None
    assert tok.heads["depth"].proj.weight.grad is not None
    assert tok.encoder.patch_embed.proj.weight.grad is None  # depth never uses the RGB path
    assert losses[-1] < 0.5 * losses[0]


EXAMPLE_RUN = Path(__file__).resolve().parents[1] / "docs/examples/atoken-example-depth/train.toml"


def test_the_example_trains_images_and_depth_through_atoken_train(tmp_path):
    """The plugin's run file: its own task, data source and metric next to atoken's image task,
    trained by ``atoken train`` with no entry point of its own; the checkpoint reconstructs
    depth maps better than the constant depth it starts from."""
    from atoken_example_depth.training import make_depth_maps
    from click.testing import CliRunner

    from atoken.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["train", str(EXAMPLE_RUN), "--steps", "30", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for key in ("image_reconstruction/psnr", "depth/depth_rmse", "depth/depth_abs_rel"):
        assert key in result.output
    assert (out / "depth" / "recon_step000030.png").exists()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("depth/l1" in r and "image_reconstruction/l1" in r for r in records[:1])

    tok = atoken.Tokenizer.from_pretrained(out / "tokenizer")
    maps = make_depth_maps(3, 48, 80, seed=7)  # depth maps the run never saw
    recon = tok.reconstruct(maps, modality="depth")
    assert [r.shape for r in recon] == [m.shape for m in maps]
    mse = torch.stack([(r - m).pow(2).mean() for r, m in zip(recon, maps, strict=True)]).mean()
    constant = torch.stack([(m - 3.5).pow(2).mean() for m in maps]).mean()  # depth_mean
    assert float(mse) < 0.5 * float(constant), (float(mse), float(constant))
