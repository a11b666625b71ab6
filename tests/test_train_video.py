"""Stage 2 (images + video): latent expansion, round-robin batches, L1-only video loss, and a
short run from an image checkpoint through ``atoken train`` that writes GIF and MP4 files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from atoken.cli import main
from atoken.core.errors import ConfigError
from atoken.engine.runconfig import load_run_file
from atoken.engine.transforms import expand_latent
from atoken.tokenizer import Tokenizer
from atoken.train import build_run

ROOT = Path(__file__).resolve().parents[1]


def _image_model(**overrides) -> Tokenizer:
    torch.manual_seed(0)
    tok = Tokenizer.from_preset("tiny", latent_dim=32, depth=1, decoder_depth=1, **overrides)
    with torch.no_grad():  # a trained-looking head (it starts at zero)
        torch.nn.init.normal_(tok.head.proj.weight, std=0.05)
    return tok.eval()


def test_expanding_the_latent_leaves_the_decoder_output_unchanged():
    tok = _image_model()
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 32, 48, generator=g)]
    clip = [torch.rand(3, 8, 32, 32, generator=g)]
    before = tok.reconstruct(images)[0], tok.reconstruct(clip, "video")[0]
    wide = expand_latent(tok, 48).eval()
    assert wide.config.latent_dim == 48 and wide.decoder.in_proj.weight.shape[1] == 48
    after = wide.reconstruct(images)[0], wide.reconstruct(clip, "video")[0]
    for b, a in zip(before, after, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    latent = wide.encode(images)
    assert latent.feats.shape[1] == 48 and bool(latent.feats[:, 32:].abs().sum() > 0)
    assert not bool(wide.decoder.in_proj.weight[:, 32:].any())
    # The new channels can learn: the zero columns receive gradients.
    wide.train()
    recon, _, _ = wide.autoencode(images)
    (recon[0] - images[0]).abs().mean().backward()
    assert bool(wide.decoder.in_proj.weight.grad[:, 32:].abs().sum() > 0)
    assert wide is tok  # in place: the tokenizer's modules changed
    assert expand_latent(tok, 48) is tok  # already that wide: nothing to do


def test_expand_latent_rejects_what_it_cannot_expand():
    tok = _image_model()
    with pytest.raises(ConfigError, match="<"):
        expand_latent(tok, 16)
    fsq = Tokenizer.from_preset(
        "tiny", bottleneck="fsq", latent_dim=6, bottleneck_params={"levels": [4] * 6}
    )
    with pytest.raises(ConfigError, match="kl"):
        expand_latent(fsq, 48)


RUN = """
[run]
name = "v"
out_dir = "{out}"

[model]
preset = "tiny"
latent_dim = 32
overrides = {{ depth = 1, decoder_depth = 1 }}
init_from = "{init}"
expand_latent = 48

[optim]
lr = 1e-3
warmup_steps = 1
grad_accum = 2

[train]
steps = 2
precision = "fp32"
ema_decay = 0
log_every = 1
progress = false

[[tasks]]
name = "image_reconstruction"
data = {{ source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "l1", weight = 0.2 }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 1

[[tasks]]
name = "video_reconstruction"
tile_frames = 8
kv_cache_steps = 2

[tasks.data]
source = "video_files"
clips = ["carphone"]
heldout = ["carphone"]
max_frames = 40
max_side = 64
batch_size = 1
frames = 8
crop_min = 32
crop_max = 32
eval_frames = 20
"""


@pytest.fixture
def run_file(tmp_path) -> Path:
    init = tmp_path / "image_ckpt"
    _image_model().save_pretrained(init)
    path = tmp_path / "run.toml"
    path.write_text(RUN.format(out=tmp_path / "out", init=init))
    return path


def test_round_robin_batches_and_l1_only_video_loss(run_file):
    cfg = load_run_file(run_file)
    tok, mixture = build_run(cfg)
    assert tok.config.latent_dim == 48  # [model] expand_latent
    labels = [mixture.tasks[mixture.batch(s, m)[0]].label for s in range(2) for m in range(2)]
    assert labels == ["image_reconstruction", "video_reconstruction"] * 2
    index, clips = mixture.batch(0, 1)
    assert clips[0].shape == (3, 8, 32, 32)
    tok.train()
    torch.manual_seed(0)
    total, logs = mixture.loss(tok, (index, clips))
    torch.manual_seed(0)
    recon, _, out = tok.autoencode(clips, "video")
    l1 = (recon[0] - clips[0]).abs().mean()
    expected = 0.2 * l1 + 1e-8 * out.terms["kl"]  # the video task's default losses
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert set(logs) == {f"video_reconstruction/{k}" for k in ("l1", "kl", "loss")}


@pytest.mark.slow
def test_atoken_train_runs_stage_two_and_writes_video_reconstructions(run_file, tmp_path):
    result = CliRunner().invoke(main, ["train", str(run_file)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    videos = out / "video_reconstruction"
    assert (videos / "video_step000002_carphone.gif").stat().st_size > 0
    assert (videos / "video_step000002_carphone.mp4").stat().st_size > 0
    for key in ("video_psnr", "video_ssim", "flicker", "image_reconstruction/psnr"):
        assert key in result.output
    saved = json.loads((out / "tokenizer" / "config.json").read_text())
    assert saved["config"]["latent_dim"] == 48
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    assert len(train) == 2 and all("video_reconstruction/l1" in r for r in train)
    assert all("image_reconstruction/l1" in r for r in train)
    # The stage-2 tokenizer reconstructs an mp4 through the CLI.
    from atoken.data.video_io import write_video

    clip = write_video(torch.rand(3, 10, 32, 32), tmp_path / "c.mp4")
    rec = CliRunner().invoke(
        main, ["reconstruct", "--checkpoint", str(out), "--out", str(tmp_path / "r"), str(clip)]
    )
    assert rec.exit_code == 0, rec.output
    assert (tmp_path / "r" / "c_side_by_side.gif").exists()
    assert (tmp_path / "r" / "c_side_by_side.mp4").exists()
