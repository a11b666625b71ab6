"""``atoken train --nproc 2`` on WebDataset shards: the batches of each rank, computed by its
data workers, are those it computes itself (the losses of data_workers = 2 and 0 agree)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("webdataset")

from atoken.core.errors import RunFolderError
from atoken.engine.run_folder import RunFolderLock
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


def _start(run_file: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "atoken.cli", "train", *args, str(run_file)]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, found through /proc (children first)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [], [pid]
    while frontier:
        tree += frontier
        frontier = [c for c, parent in parents.items() if parent in frontier]
    for p in reversed(tree):
        with contextlib.suppress(ProcessLookupError):  # gone already
            os.kill(p, signal.SIGKILL)


def test_a_two_process_run_killed_resumes_on_two_and_on_one_at_the_next_sample(tmp_path):
    """SIGKILL to the whole group mid-epoch. On 2 processes again the run ends with the
    losses of one that never stopped; on 1 process it goes on at the sample the 2-process
    run would have drawn next (the checkpoint's data position, logged as it resumes)."""
    urls = write_shards(tmp_path / "shards", n=18, per_shard=4)  # epochs of 16: crossed
    body = RUN.replace("steps = 3", "steps = 12\ncheckpoint_every = 2")

    def run_file(name: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(body.format(out=tmp_path / name, urls=urls, workers=2))
        return path

    full = _start(run_file("full"), "--nproc", "2")
    cut = _start(run_file("cut"), "--nproc", "2")
    ckpts, deadline = tmp_path / "cut" / "checkpoints", time.monotonic() + 300
    while not any(int(p.name[5:13]) >= 4 for p in ckpts.glob("step_*.pt")):
        assert cut.poll() is None, cut.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint of step 4"
        time.sleep(0.05)
    _kill_tree(cut.pid)  # torchrun starts its workers in sessions of their own
    cut.wait(timeout=60)
    while True:  # rank 0 holds the run folder's lock until it is gone: then nothing writes
        try:
            RunFolderLock(tmp_path / "cut").acquire().release()
            break
        except RunFolderError:
            assert time.monotonic() < deadline, "the killed run's rank 0 lives on"
            time.sleep(0.05)
    saved = max(int(p.name[5:13]) for p in ckpts.glob("step_*.pt"))
    assert saved < 12  # killed mid-run
    shutil.copytree(tmp_path / "cut", tmp_path / "one")
    for proc in (full, _start(run_file("cut"), "--nproc", "2", "--resume")):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
    train = lambda out: {r["step"]: r["loss"] for r in _records(out) if r["kind"] == "train"}  # noqa: E731
    assert train(tmp_path / "cut") == pytest.approx(train(tmp_path / "full"), rel=1e-6)

    one = _start(run_file("one"), "--resume")  # the same folder, now on one process
    _, err = one.communicate(timeout=600)
    assert one.returncode == 0, err.decode()[-3000:]
    resumed = [r for r in _records(tmp_path / "one") if r["kind"] == "resumed"]
    step = resumed[-1]["step"]
    assert resumed[-1]["world"] == 1 and step == saved
    # 2 ranks x batch 2 per step drawn before the checkpoint; one process alone would be at
    # step x 1 x 2 without the checkpoint's position
    assert resumed[-1]["data"] == {"image_reconstruction": step * 2 * 2}
    assert max(train(tmp_path / "one")) == 12


def test_a_hugging_face_dataset_trains_on_two_processes_with_the_losses_of_no_workers(tmp_path):
    """``hf_datasets`` under ``atoken train --nproc 2``: each rank its share, decoded by its
    data workers, and the global losses of data_workers = 0."""
    datasets = pytest.importorskip("datasets")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(9)]
    features = datasets.Features({"image": datasets.Image()})
    folder = tmp_path / "hf"
    datasets.Dataset.from_dict({"image": images}, features=features).save_to_disk(str(folder))
    data = f'source = "hf_datasets", path = "{folder}", image_key = "image"'
    body = RUN.replace('source = "webdataset", urls = "{urls}"', data)

    def losses(name: str, workers: int) -> list[float]:
        path = tmp_path / f"{name}.toml"
        path.write_text(body.format(out=tmp_path / name, workers=workers))
        cmd = [sys.executable, "-m", "atoken.cli", "train", "--nproc", "2", str(path)]
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1"}
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return [r["loss"] for r in _records(tmp_path / name) if r["kind"] == "train"]

    with_workers = losses("w2", 2)
    assert len(with_workers) == 3 and with_workers == losses("w0", 0)
