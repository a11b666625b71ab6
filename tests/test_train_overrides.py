"""``atoken train`` as a user calls it: KEY=VALUE overrides, and the schedule a resume with
``--steps`` keeps unless ``--reschedule`` (issue #35 item 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from atoken.cli import main
from atoken.engine.optim import lr_at
from atoken.engine.runconfig import OptimConfig

RUN = """
[run]
name = "ov"
out_dir = "{out}"

[model]
preset = "tiny"
depth = 1
decoder_depth = 1

[optim]
lr = 1e-3
min_lr = 1e-5
warmup_steps = 1

[train]
steps = {steps}
precision = "fp32"
ema_decay = 0.9
log_every = 1
progress = false
data_workers = 0

[[tasks]]
label = "img"
name = "image_reconstruction"
data = {{ source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "mse" }}]
metrics = ["psnr"]
previews = 0
"""


def _write(tmp_path: Path, *, steps: int) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(RUN.format(out=tmp_path / "run", steps=steps))
    return path


def _train(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, ["train", *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def _lrs(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    # by step index (a training record's "step" counts the steps done with it)
    return {r["step"] - 1: r["lr"] for r in map(json.loads, lines) if r["kind"] == "train"}


def test_dotted_overrides_are_trained_and_recorded(tmp_path):
    path = _write(tmp_path, steps=1)
    overrides = ["optim.lr=1e-4", "distributed.strategy=fsdp", "tasks.0.data.batch_size=4"]
    _train(str(path), *overrides)
    out = tmp_path / "run"
    run = json.loads((out / "run.json").read_text())
    assert (run["optim"]["lr"], run["distributed"]["strategy"]) == (1e-4, "fsdp")
    assert run["tasks"][0]["data"]["batch_size"] == 4
    assert _lrs(out) == {0: pytest.approx(1e-4)}  # one warmup step: the peak
    text = (out / "run.toml").read_text()
    assert text.startswith(path.read_text())  # the file as written, then the overrides
    assert text.endswith("".join(f"# {o}\n" for o in overrides))


def test_a_misspelt_override_stops_before_anything_runs(tmp_path):
    path = _write(tmp_path, steps=1)
    result = _train(str(path), "optim.lrr=1e-4", ok=False)
    assert "ConfigError: override 'optim.lrr=1e-4'" in result.output
    assert "did you mean 'lr'?" in result.output
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ schedule
def test_a_resume_with_more_steps_keeps_the_schedule_unless_rescheduled(tmp_path):
    path = _write(tmp_path, steps=4)
    _train(str(path))
    kept, stretched = tmp_path / "run", tmp_path / "stretched"
    shutil.copytree(kept, stretched)
    first = _lrs(kept)

    _train(str(path), "--resume", "--steps", "8")
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=1)
    lrs = _lrs(kept)
    assert [lrs[s] for s in range(4)] == [first[s] for s in range(4)]  # the log kept
    assert [lrs[s] for s in range(8)] == pytest.approx([lr_at(s, optim, 4) for s in range(8)])
    assert [lrs[s] for s in range(4, 8)] == pytest.approx([1e-5] * 4)  # the cosine had ended
    assert json.loads((kept / "run.json").read_text())["optim"]["schedule_steps"] == 4
    _train(str(path), "--resume", "--steps", "10")  # resumed again: still the first length
    assert _lrs(kept)[9] == pytest.approx(1e-5)

    _train(str(path), "--resume", "--steps", "8", "--reschedule", "--out", str(stretched))
    lrs = _lrs(stretched)
    assert [lrs[s] for s in range(4)] == [first[s] for s in range(4)]
    assert [lrs[s] for s in range(4, 8)] == pytest.approx([lr_at(s, optim, 8) for s in range(4, 8)])
    assert lrs[4] > 10 * 1e-5  # stretched: still well above min_lr
    assert "# optim.schedule_steps=8" in (stretched / "run.toml").read_text()


def test_nproc_passes_the_overrides_and_reschedule_to_every_worker():
    from atoken.cli.distributed import torchrun_command

    params = {"run_file": "r.toml", "resume": True, "reschedule": True, "steps": 8}
    cmd = torchrun_command({**params, "overrides": ("optim.lr=1e-4",)}, nproc=2, max_restarts=0)
    assert cmd[-6:] == ["r.toml", "--resume", "--reschedule", "--steps", "8", "optim.lr=1e-4"]
