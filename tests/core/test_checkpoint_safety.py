"""Resuming never runs code a run folder holds, a damaged checkpoint is an answer, and one
process writes a run folder at a time (#36 items 1, 2 and 4), through ``atoken train`` as a
user calls it.

A hostile file is a pickle whose ``__reduce__`` would create a marker file: planted in each
file a resume reads (the sharded index ``.metadata``, each ``.distcp`` data file, a
non-tensor item inside one, ``meta.json``, a full ``.pt`` checkpoint), the marker never
appears and the error is a ``CheckpointError``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from click.testing import CliRunner

import atoken.cli
from atoken.core.errors import RunFolderError
from atoken.engine.run_folder import RunFolderLock, prepare_run_folder

RUN = (
    '[run]\nout_dir = "out"\n'
    '[model]\npreset = "tiny"\noverrides = {{ depth = 1, decoder_depth = 1 }}\n'
    '[train]\nsteps = {steps}\nprecision = "fp32"\nprogress = false\ncheckpoint_every = 1\n'
    "log_every = 1\n"
    'keep_checkpoints = 3\ncheckpoint_format = "{fmt}"\n'
    '[[tasks]]\nname = "image_reconstruction"\n'
    'data = {{ source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }}\n'
)


class Payload:
    """What an attacker plants: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def _torch_blob(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    return buf.getvalue()


def _train(folder: Path, *args: str, steps: int = 2, fmt: str = "sharded"):
    run = folder / "run.toml"
    run.write_text(RUN.format(steps=steps, fmt=fmt))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return CliRunner().invoke(atoken.cli.main, ["train", str(run), *args])
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished run per checkpoint format, 2 steps, a checkpoint at each step."""
    made = {}
    for fmt in ("sharded", "full"):
        folder = tmp_path_factory.mktemp(fmt)
        result = _train(folder, fmt=fmt)
        assert result.exit_code == 0, result.output
        made[fmt] = folder
    return made


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    return dst


def _plant_in_item(step: Path, marker: Path) -> None:
    """Point a non-tensor item (an optimizer hyper-parameter) of the index at a torch.save
    blob of the payload appended to its data file: every size still checks out."""
    index = json.loads((step / ".metadata").read_text())
    entry = next(s for s in index["storage"] if s["fqn"] in index["bytes"])
    blob = _torch_blob(marker)
    data = step / entry["file"]
    entry["start"], entry["length"] = data.stat().st_size, len(blob)
    with open(data, "ab") as f:
        f.write(blob)
    (step / ".metadata").write_text(json.dumps(index))


def _plant(fmt: str, where: str, out: Path, marker: Path) -> None:
    ckpts = out / "checkpoints"
    if fmt == "full":
        (ckpts / "step_00000002.pt").write_bytes(_torch_blob(marker))
        return
    step = ckpts / "step_00000002"
    if where == "item":
        _plant_in_item(step, marker)
    elif where == "distcp":
        for data in step.glob("*.distcp"):  # the same size: only loading can tell
            raw = _pickle(marker)
            data.write_bytes(raw + b"\0" * max(0, data.stat().st_size - len(raw)))
    else:
        (step / where).write_bytes(_pickle(marker))


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        ("sharded", ".metadata"),
        ("sharded", "distcp"),
        ("sharded", "item"),
        ("sharded", "meta.json"),
        ("full", "step.pt"),
    ],
)
def test_a_planted_pickle_never_runs_on_resume(runs, tmp_path, fmt, where):
    folder = _copy(runs[fmt], tmp_path / "run")
    marker = tmp_path / "PWNED"
    _plant(fmt, where, folder / "out", marker)
    result = _train(folder, "--resume", "--steps", "3", fmt=fmt)
    assert not marker.exists(), "resuming ran the planted code"
    assert result.exit_code != 0
    assert "CheckpointError" in result.output, result.output
    assert "step_00000002" in result.output  # the checkpoint is named
    if where == ".metadata":
        assert "atoken checkpoint upgrade --trust" in result.output


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        ("truncate-distcp", "__0_0.distcp is truncated"),
        ("delete-metadata", ".metadata is unreadable"),
        ("truncate-metadata", ".metadata is damaged"),
    ],
)
def test_a_damaged_checkpoint_names_the_file_and_resumes_older_only_when_asked(
    runs, tmp_path, damage, names
):
    folder = _copy(runs["sharded"], tmp_path / "run")
    step = folder / "out" / "checkpoints" / "step_00000002"
    if damage == "truncate-distcp":
        data = step / "__0_0.distcp"
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif damage == "delete-metadata":
        (step / ".metadata").unlink()
    else:
        raw = (step / ".metadata").read_bytes()
        (step / ".metadata").write_bytes(raw[: len(raw) // 2])
    result = _train(folder, "--resume", "--steps", "3")
    assert result.exit_code != 0 and "CheckpointError" in result.output, result.output
    assert "step_00000002" in result.output and names in result.output, result.output
    assert "--resume-from step_00000001" in result.output  # the newest intact one
    assert step.exists()  # nothing deleted

    for ask in (["--resume", "--fallback"], ["--resume-from", "step_00000001"]):
        trial = _copy(folder, tmp_path / f"trial{len(ask[-1])}")
        result = _train(trial, *ask, "--steps", "3")
        assert result.exit_code == 0, result.output
        records = (trial / "out" / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(r)["step"] for r in records if json.loads(r)["kind"] == "train"]
        assert steps == [1, 2, 3]  # step 2 redone from step 1's checkpoint, not skipped


def test_a_pickled_index_loads_after_atoken_checkpoint_upgrade_trust(runs, tmp_path):
    folder = _copy(runs["sharded"], tmp_path / "run")
    step = folder / "out" / "checkpoints" / "step_00000002"
    for old in step.iterdir():
        if old.name != "meta.json":
            old.unlink()
    state = {"x": torch.ones(2)}
    dcp.save(state, checkpoint_id=str(tmp_path / "stock"))  # stock DCP: a pickled index
    index = (tmp_path / "stock" / ".metadata").read_bytes()
    assert index[:1] == b"\x80"
    (step / ".metadata").write_bytes(index)
    (step / "__0_0.distcp").write_bytes((tmp_path / "stock" / "__0_0.distcp").read_bytes())

    refused = CliRunner().invoke(atoken.cli.main, ["checkpoint", "upgrade", str(step)])
    assert refused.exit_code != 0 and "--trust" in refused.output
    done = CliRunner().invoke(atoken.cli.main, ["checkpoint", "upgrade", "--trust", str(step)])
    assert done.exit_code == 0, done.output
    assert json.loads((step / ".metadata").read_text())["format"] == "atoken-dcp"
    loaded = {"x": torch.zeros(2)}
    from atoken.engine.dcp_format import SafeLoadPlanner, SafeReader

    dcp.load(loaded, storage_reader=SafeReader(str(step)), planner=SafeLoadPlanner())
    assert torch.equal(loaded["x"], torch.ones(2))


def test_a_second_training_into_a_live_run_folder_is_refused_naming_the_holder(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    (live / "run.toml").write_text(RUN.format(steps=100000, fmt="full"))
    cmd = [sys.executable, "-m", "atoken.cli", "train", "run.toml"]
    proc = subprocess.Popen(cmd, cwd=live, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (live / "out" / "metrics.jsonl").exists():  # training, holding the lock
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        before = (live / "out" / "metrics.jsonl").read_text().splitlines()[0]
        for args in ([], ["--overwrite"], ["--resume"]):
            result = _train(live, *args, steps=100000, fmt="full")
            assert result.exit_code != 0, result.output
            assert "RunFolderError" in result.output and f"process {proc.pid}" in result.output
        assert (live / "out" / "metrics.jsonl").read_text().splitlines()[0] == before
        assert proc.poll() is None  # the live run goes on
    finally:
        proc.kill()
        proc.wait()
    assert _train(live, "--overwrite", steps=1, fmt="full").exit_code == 0  # released on death


def _contend(folder: str, go, won) -> None:
    go.wait()
    try:
        with RunFolderLock(Path(folder)):
            prepare_run_folder(Path(folder))
            Path(folder).mkdir(exist_ok=True)
            (Path(folder) / "metrics.jsonl").write_text(f"{os.getpid()}\n")
            won.put(os.getpid())
            time.sleep(0.3)
    except RunFolderError:
        won.put(None)
    except Exception as exc:  # shown by the test instead of a silent timeout
        won.put(repr(exc))


def test_two_trainings_started_at_the_same_instant_never_both_take_a_folder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for attempt in range(20):
        folder = tmp_path / f"run{attempt}"
        go, won = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(str(folder), go, won)) for _ in range(2)]
        for p in procs:
            p.start()
        go.set()
        results = [won.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        winners = [r for r in results if isinstance(r, int)]
        assert all(r is None or isinstance(r, int) for r in results), results
        assert len(winners) == 1, (attempt, results)
        assert (folder / "metrics.jsonl").read_text() == f"{winners[0]}\n"


def test_two_atoken_train_started_together_never_share_a_folder(tmp_path):
    """The race of #36 through the command: two fresh runs into one folder at the same instant;
    one trains, the other is refused, and the log holds one run."""
    for attempt in range(3):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        (folder / "run.toml").write_text(RUN.format(steps=2, fmt="full"))
        cmd = [sys.executable, "-m", "atoken.cli", "train", "run.toml"]
        procs = [
            subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=300)[0].decode() for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes[0] == 0 and codes[1] != 0, outs
        refused = outs[[p.returncode for p in procs].index(codes[1])]
        assert "RunFolderError" in refused, refused
        records = [
            json.loads(x) for x in (folder / "out" / "metrics.jsonl").read_text().splitlines()
        ]
        keys = [(r["step"], r["kind"]) for r in records]
        assert len(keys) == len(set(keys)), keys  # one run's records, none twice
