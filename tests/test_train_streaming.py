"""``atoken train`` on WebDataset shards and a Hugging Face dataset, with data workers: the same
losses as without workers, and a run killed with SIGKILL resumes on the exact next sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("webdataset")

from atoken.cli import main
from tests.data.test_webdataset import write_shards

RUN = """
[run]
name = "s"
out_dir = "{out}"
seed = 2

[model]
preset = "tiny"
latent_dim = 32
overrides = {{ depth = 1, decoder_depth = 1 }}

[optim]
lr = 1e-3
warmup_steps = 2

[train]
steps = {steps}
precision = "fp32"
ema_decay = 0.9
checkpoint_every = 2
log_every = 1
progress = false
data_workers = {workers}

[[tasks]]
name = "image_reconstruction"
losses = [{{ name = "l1", weight = 1.0 }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 0
data = {data}
"""


def _run_file(tmp_path: Path, name: str, data: str, *, steps: int = 4, workers: int = 2) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(RUN.format(out=tmp_path / name, steps=steps, workers=workers, data=data))
    return path


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def _wds(urls: str) -> str:
    return (
        f'{{ source = "webdataset", urls = "{urls}", batch_size = 2, crop_min = 32, '
        "crop_max = 48 }"
    )


def test_webdataset_with_workers_trains_the_losses_of_no_workers(tmp_path):
    data = _wds(write_shards(tmp_path / "shards"))
    runner = CliRunner()
    for name, workers in (("w2", 2), ("w0", 0)):
        result = runner.invoke(
            main, ["train", str(_run_file(tmp_path, name, data, workers=workers))]
        )
        assert result.exit_code == 0, result.output
    two, zero = _losses(tmp_path / "w2"), _losses(tmp_path / "w0")
    assert len(two) == 4 and two == zero  # bit for bit
    assert (tmp_path / "w2" / "tokenizer" / "model.safetensors").exists()


def test_hf_dataset_trains_through_atoken_train(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)) for _ in range(5)]
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": images}, features=features).save_to_disk(
        str(tmp_path / "hf")
    )
    data = (
        f'{{ source = "hf_datasets", path = "{tmp_path / "hf"}", image_key = "image", '
        "batch_size = 2, crop_min = 32, crop_max = 48 }"
    )
    result = CliRunner().invoke(main, ["train", str(_run_file(tmp_path, "hf_run", data, steps=3))])
    assert result.exit_code == 0, result.output
    assert len(_losses(tmp_path / "hf_run")) == 3


def _atoken(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("atoken")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [str(exe), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own group: the kill takes its data workers too
    )


def test_a_run_killed_with_sigkill_resumes_on_the_exact_next_sample(tmp_path):
    data = _wds(write_shards(tmp_path / "shards", n=9, per_shard=4))  # epochs of 8: crosses them
    steps = 20
    full = _atoken("train", str(_run_file(tmp_path, "full", data, steps=steps)))
    cut_file = _run_file(tmp_path, "cut", data, steps=steps)
    cut = _atoken("train", str(cut_file))
    deadline = time.monotonic() + 240
    ckpts = tmp_path / "cut" / "checkpoints"
    while not any(int(p.name[5:13]) >= 6 for p in ckpts.glob("step_*.pt")):
        assert cut.poll() is None, cut.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint of step 6"
        time.sleep(0.05)
    os.killpg(cut.pid, signal.SIGKILL)
    cut.wait(timeout=60)
    assert cut.returncode == -signal.SIGKILL
    killed_at = max(_losses(tmp_path / "cut"))
    assert killed_at < steps  # killed mid-run
    resumed = _atoken("train", str(cut_file), "--resume")
    for proc in (full, resumed):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")
