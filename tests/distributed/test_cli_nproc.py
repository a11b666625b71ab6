"""``atoken train --nproc 2`` on the bundled photos: the public entry point on two processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import atoken
from atoken.cli_distributed import torchrun_command

ROOT = Path(__file__).resolve().parents[2]
RUN = """
[run]
name = "nproc"
out_dir = "{out}"

[model]
preset = "tiny"
latent_dim = 8
overrides = {{ depth = 1, decoder_depth = 1 }}

[train]
steps = 4
checkpoint_every = 2
log_every = 1
ema_decay = 0.9
progress = false
precision = "fp32"

[distributed]
strategy = "{strategy}"
{dtype}
timeout = 120.0

[[tasks]]
label = "img"
name = "image_reconstruction"
data = {{ source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "mse" }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 1
"""


def test_the_launcher_runs_atoken_train_under_torchrun():
    params = {"run_file": "r.toml", "resume": True, "steps": 5, "out_dir": None}
    cmd = torchrun_command(params, nproc=3, max_restarts=2)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=3" in cmd and "--max-restarts=2" in cmd
    assert cmd[-5:] == ["train", "r.toml", "--resume", "--steps", "5"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_atoken_train_nproc_2_trains_once_and_writes_once(tmp_path, strategy):
    path = tmp_path / "run.toml"
    # fsdp: bf16 parameters with fp32 steps, the mix every entry point must meet on any CPU
    dtype = 'param_dtype = "bf16"' if strategy == "fsdp" else ""
    path.write_text(RUN.format(out=tmp_path / "out", strategy=strategy, dtype=dtype))
    cmd = [sys.executable, "-m", "atoken.cli", "train", "--nproc", "2", str(path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 4 steps") == 1  # rank 0 reports
    out = tmp_path / "out"
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [0, 1, 2, 3]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000002.pt",
        "step_00000004.pt",
    ]
    assert len(list((out / "img").glob("recon_step*.png"))) == 1
    tok = atoken.Tokenizer.from_pretrained(out / "tokenizer")
    assert tok.reconstruct([torch.rand(3, 32, 32)])[0].shape == (3, 32, 32)
