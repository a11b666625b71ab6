"""Two processes on gloo give what one process gives with the same global batch.

Each case launches ``torchrun`` (``python -m torch.distributed.run``) on this CPU; the toy run
(``toy_run.py``) splits every global batch unevenly over the ranks, so the loss must be
normalised by the global count. Tolerance: 1e-6 relative on losses and parameters (the ranks
sum their gradients in another order than one process does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("toy_run.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(
    out: Path, steps: int, *args: str, nproc: int = 1, env: dict | None = None, schedule: int = 0
) -> dict:
    """``toy_run.py`` on ``nproc`` processes; ``schedule``: the learning-rate schedule's length
    when the run is a part of a longer one (0: its own steps)."""
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += [str(SCRIPT), str(out), str(steps), *args]
    environ = {**os.environ, "TOY_SCHEDULE_STEPS": str(schedule), **(env or {})}
    done = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def _close(a: dict, b: dict) -> None:
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-6, abs=1e-9)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert a[part][key] == pytest.approx(b[part][key], rel=1e-6, abs=1e-7), key


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("alone"), 4)


#: Every run below is the whole 4-step run or a part of it, stopped and resumed: one schedule.
WHOLE = 4


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_train_what_one_process_trains(alone, tmp_path, strategy):
    two = _run(tmp_path / "two", 4, strategy, nproc=2, schedule=WHOLE)
    assert two["world"] == 2 and len(two["losses"]) == 4
    _close(two, alone)  # the unused layer too: weight decay did not touch it on either
    assert alone["model"]["unused.weight"] == two["model"]["unused.weight"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_run_saved_on_two_processes_resumes_on_one_and_back(alone, tmp_path, strategy):
    _run(tmp_path / "a", 2, strategy, nproc=2, schedule=WHOLE)  # 2 -> 1
    _close(_run(tmp_path / "a", 4, strategy, "--resume", schedule=WHOLE), alone)
    _run(tmp_path / "b", 2, strategy, schedule=WHOLE)  # 1 -> 2
    _close(_run(tmp_path / "b", 4, strategy, "--resume", nproc=2, schedule=WHOLE), alone)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_sharded_checkpoint_is_written_by_every_rank_and_reshards(alone, tmp_path, strategy):
    """``checkpoint_format = "sharded"``: each rank writes its own file of a
    ``torch.distributed.checkpoint`` folder; 2 -> 1 and 1 -> 2 continue like the run that
    never stopped."""
    sharded = {"TOY_FORMAT": "sharded"}
    _run(tmp_path / "a", 2, strategy, nproc=2, env=sharded, schedule=WHOLE)
    folder = tmp_path / "a" / "checkpoints" / "step_00000002"
    files = sorted(p.name for p in folder.iterdir())
    if strategy == "fsdp":  # each rank its shards; ddp writes the replicated tensors once
        assert {"__0_0.distcp", "__1_0.distcp"} <= set(files), files
    assert {".metadata", "meta.json"} <= set(files)
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["step"], meta["world"], meta["data"]["step"]) == (2, 2, 2)
    resumed = _run(tmp_path / "a", 4, strategy, "--resume", env=sharded, schedule=WHOLE)
    _close(resumed, alone)  # 2 -> 1
    kept = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert kept == ["step_00000002", "step_00000004"]  # no partial folder left
    _run(tmp_path / "b", 2, strategy, env=sharded, schedule=WHOLE)
    back = _run(tmp_path / "b", 4, strategy, "--resume", nproc=2, env=sharded, schedule=WHOLE)
    _close(back, alone)  # 1 -> 2


def test_only_rank_zero_writes_the_log(tmp_path):
    _run(tmp_path / "log", 4, nproc=2, schedule=WHOLE)
    records = [json.loads(x) for x in (tmp_path / "log" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]


def test_fsdp_computes_in_bf16_when_asked(alone, tmp_path):
    """``param_dtype = "bf16"``: the forward and backward in bf16, reduced and stepped in
    fp32; close to the fp32 run (bf16 keeps 8 bits of mantissa) but not equal to it."""
    bf16 = {"TOY_PARAM_DTYPE": "bf16"}
    two = _run(tmp_path / "bf16", 4, "fsdp", nproc=2, env=bf16, schedule=WHOLE)
    assert two["losses"] == pytest.approx(alone["losses"], rel=3e-2)
    assert two["losses"] != pytest.approx(alone["losses"], rel=1e-6)
