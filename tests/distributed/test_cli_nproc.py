"""``atoken train --nproc 2`` on the bundled photos: the public entry point on two processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import atoken
from atoken.cli.distributed import torchrun_command

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


STAGES = """
[[stages]]
name = "small"
steps = 2
tasks = ["img"]

[[stages]]
name = "wide"
steps = 2
tasks = ["img"]
transforms = [{{ name = "expand_latent", latent_dim = 12 }}]
"""


def _train(tmp_path, name, strategy, *extra, dtype="", fmt="full", stages=True):
    """``atoken train --nproc 2`` on a run file written for ``strategy``; the completed run."""
    path = tmp_path / f"{name}.toml"
    text = RUN.format(out=tmp_path / name, strategy=strategy, dtype=dtype)
    text = text.replace("[train]\n", f'[train]\ncheckpoint_format = "{fmt}"\n')
    path.write_text(text + (STAGES.format() if stages else ""))
    cmd = [sys.executable, "-m", "atoken.cli", "train", "--nproc", "2", str(path), *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _losses(out):
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def test_atoken_train_nproc_2_trains_once_and_writes_once(tmp_path):
    done = _train(tmp_path, "out", "ddp", stages=False)
    assert done.stdout.count("trained 4 steps") == 1  # rank 0 reports
    out = tmp_path / "out"
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_00000002.pt",
        "step_00000004.pt",
    ]
    assert len(list((out / "img").glob("recon_step*.png"))) == 1
    tok = atoken.Tokenizer.from_pretrained(out / "tokenizer")
    assert tok.reconstruct([torch.rand(3, 32, 32)])[0].shape == (3, 32, 32)


def test_stages_under_fsdp_match_ddp_and_resume_into_the_second_stage(tmp_path):
    """Two [[stages]] (the second widens the latent) on two processes: ``fsdp`` with sharded
    checkpoints, stopped in stage 2 and resumed, gives ``ddp``'s losses; the resumed steps
    compute in bf16 (``param_dtype`` may change on resume), so every FSDP2 entry point
    (training, evaluation, export) meets bf16 parameters."""
    _train(tmp_path, "ddp", "ddp")
    _train(tmp_path, "fsdp", "fsdp", "--steps", "3", dtype='param_dtype = "fp32"', fmt="sharded")
    out = tmp_path / "fsdp"
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == ["step_00000002", "step_00000003"]  # DCP folders, the last one in stage 2
    meta = json.loads((out / "checkpoints" / "step_00000003" / "meta.json").read_text())
    assert (meta["step"], meta["stage"], meta["world"]) == (3, 1, 2)
    done = _train(tmp_path, "fsdp", "fsdp", "--resume", dtype='param_dtype = "bf16"', fmt="sharded")
    assert done.stdout.count("trained 4 steps") == 1
    ref, got = _losses(tmp_path / "ddp"), _losses(out)
    assert sorted(got) == [1, 2, 3, 4]  # each step once in the log
    for step in (1, 2, 3):  # fp32 on both: reduce-scatter vs all-reduce rounding only
        assert got[step] == pytest.approx(ref[step], rel=1e-5), step
    assert got[4] == pytest.approx(ref[4], rel=3e-2)  # bf16 compute after the resume
    for stage, width in (("small", 8), ("wide", 12)):
        record = json.loads((out / "stages" / stage / "metrics.json").read_text())
        assert record["complete"] and record["stage"] == stage
        tok = atoken.Tokenizer.from_pretrained(out / "stages" / stage / "tokenizer")
        assert tok.encode([torch.rand(3, 32, 32)]).feats.shape[-1] == width
