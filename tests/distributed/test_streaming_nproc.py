"""``atoken train --nproc 2`` on WebDataset shards: the batches of each rank, computed by its
data workers, are those it computes itself (the losses of data_workers = 2 and 0 agree)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("webdataset")

from tests.data.test_webdataset import write_shards

ROOT = Path(__file__).resolve().parents[2]
RUN = """
[run]
name = "wds"
out_dir = "{out}"
seed = 3

[model]
preset = "tiny"
latent_dim = 8
overrides = {{ depth = 1, decoder_depth = 1 }}

[train]
steps = 3
log_every = 1
ema_decay = 0.9
progress = false
precision = "fp32"
data_workers = {workers}

[distributed]
timeout = 120.0

[[tasks]]
name = "image_reconstruction"
data = {{ source = "webdataset", urls = "{urls}", batch_size = 2, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "mse" }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 0
"""


def _losses(tmp_path: Path, name: str, urls: str, workers: int) -> list[float]:
    path = tmp_path / f"{name}.toml"
    path.write_text(RUN.format(out=tmp_path / name, urls=urls, workers=workers))
    cmd = [sys.executable, "-m", "atoken.cli", "train", "--nproc", "2", str(path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").open()]
    return [r["loss"] for r in records if r["kind"] == "train"]


def test_two_processes_with_data_workers_train_the_losses_of_none(tmp_path):
    urls = write_shards(tmp_path / "shards", n=14, per_shard=4)
    with_workers = _losses(tmp_path, "w2", urls, 2)
    assert len(with_workers) == 3
    assert with_workers == _losses(tmp_path, "w0", urls, 0)  # the global loss, bit for bit
