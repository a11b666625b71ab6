"""Faults on several processes: a rank killed mid-run (torchrun restarts the group, which
resumes from the last complete checkpoint), SIGTERM (a checkpoint, then exit 143) and a hung
rank (the collective timeout names it instead of a silent stall)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed.test_data_parallel import ROOT, SCRIPT, _close, _run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def _launch(out: Path, steps: int, fault: str, *torchrun: str, timeout: float = 60):
    env = {**os.environ, "TOY_FAULT": fault, "TOY_TIMEOUT": str(timeout)}
    cmd = (
        [*TORCHRUN, *torchrun, str(SCRIPT), str(out), str(steps)]
        if torchrun
        else [
            sys.executable,
            str(SCRIPT),
            str(out),
            str(steps),
        ]
    )
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def alone6(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("alone6"), 6)


def test_a_rank_killed_mid_run_restarts_from_the_last_checkpoint(alone6, tmp_path):
    # one restart allowed: the restarted round meets under a store prefix of its own
    # (atoken.engine.distributed.round_store), so it never reads the killed round's addresses
    done = _launch(tmp_path / "k", 6, "kill:1:3", "--nproc-per-node=2", "--max-restarts=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Connection refused" not in done.stderr
    result = json.loads((tmp_path / "k" / "result.json").read_text())
    _close(result, alone6)  # nothing lost or done twice: steps 2-3 redone from step 2's state
    records = [json.loads(x) for x in (tmp_path / "k" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 7))


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_from_it(alone6, tmp_path):
    done = _launch(tmp_path / "t", 6, "term:0:2")
    assert done.returncode == 143, done.stderr[-3000:]
    assert "stopped by SIGTERM after step 3" in done.stderr
    assert (tmp_path / "t" / "checkpoints" / "step_00000003.pt").exists()  # not a save step
    records = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "stopped" and records[-1]["reason"] == "sigterm"
    _close(_run(tmp_path / "t", 6, "--resume"), alone6)


def test_a_hung_rank_is_reported_by_the_collective_timeout(tmp_path):
    done = _launch(tmp_path / "h", 6, "hang:1:2", "--nproc-per-node=2", timeout=5)
    assert done.returncode != 0
    assert "CollectiveTimeoutError" in done.stderr and "hung or died" in done.stderr
    assert "rank 0 of 2" in done.stderr
