"""Run folders: nothing of another run is lost, and a resume continues the run it names."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import atoken
import atoken.cli
from atoken.core.errors import RunFolderError
from atoken.engine.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from atoken.engine.trainer import Trainer
from atoken.testing import registered_plugin
from tests.core.test_trainer import ToyTask, _cfg


class _Stop(Exception):
    pass


def _records(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


def test_a_fresh_run_into_a_used_folder_is_refused_and_overwrite_keeps_user_files(tmp_path):
    Trainer(_cfg(tmp_path, steps=4, checkpoint_every=2), ToyTask()).fit()
    notes = tmp_path / "NOTES.md"
    notes.write_text("mine")
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match=r"--resume.*--overwrite"):
        Trainer(_cfg(tmp_path, steps=4), ToyTask()).fit()
    assert (tmp_path / "metrics.jsonl").read_text() == before  # nothing touched
    assert len(list_checkpoints(tmp_path / "checkpoints")) == 2
    Trainer(_cfg(tmp_path, steps=3), ToyTask()).fit(overwrite=True)
    assert notes.read_text() == "mine"
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_00000003.pt"]
    assert max(r["step"] for r in _records(tmp_path)) == 3


def test_resume_refuses_another_configuration_unless_forced(tmp_path):
    Trainer(_cfg(tmp_path, steps=4), ToyTask()).fit()
    other = _cfg(tmp_path, steps=8, ema_decay=0.5)  # steps may change, ema_decay may not
    with pytest.raises(RunFolderError, match=r"train\.ema_decay: 0\.9 -> 0\.5"):
        Trainer(other, ToyTask()).fit(resume=True)
    trainer = Trainer(other, ToyTask())
    trainer.fit(resume=True, force=True)
    assert trainer.step == 8
    longer = Trainer(_cfg(tmp_path, steps=10, ema_decay=0.5), ToyTask())
    longer.fit(resume=True)  # the same configuration now, more steps: no complaint
    assert longer.step == 10


def test_killed_before_the_first_checkpoint_then_resumed_logs_each_step_once(tmp_path):
    class StopAt3:
        @atoken.hookimpl
        def atoken_step_end(self, trainer, step, logs):
            if step == 3:
                raise _Stop

    with registered_plugin(StopAt3(), name="stop3"):
        from atoken.plugins.manager import get_plugin_manager

        with pytest.raises(_Stop):
            Trainer(_cfg(tmp_path), ToyTask(), hooks=get_plugin_manager().hook).fit()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "kind": "tr')  # a line torn by the kill
    Trainer(_cfg(tmp_path), ToyTask()).fit(resume=True)
    steps = [r["step"] for r in _records(tmp_path) if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[0] == 1


def test_torn_log_line_is_repaired_on_resume(tmp_path):
    Trainer(_cfg(tmp_path, steps=4, checkpoint_every=2), ToyTask()).fit()
    list_checkpoints(tmp_path / "checkpoints")[-1].unlink()  # resume from step 2
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "ki')
    Trainer(_cfg(tmp_path, steps=4, checkpoint_every=2), ToyTask()).fit(resume=True)
    records = _records(tmp_path)  # every line parses
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]


@pytest.mark.parametrize("step", [-1, "abc", 2.5, True, None])
def test_a_checkpoint_with_a_bad_step_is_refused(tmp_path, step):
    Trainer(_cfg(tmp_path, steps=2), ToyTask()).fit()
    (path,) = list_checkpoints(tmp_path / "checkpoints")
    state = torch.load(path, weights_only=True)
    state["step"] = step
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="step must be an int >= 0"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        Trainer(_cfg(tmp_path, steps=4), ToyTask()).fit(resume=True)


def test_leftover_partial_checkpoints_are_removed_on_start(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir(parents=True)
    partial = folder / ".step_00000004.pt.tmp"
    partial.write_bytes(b"half a checkpoint")
    keep = folder / "mine.txt"
    keep.write_text("not atoken's")
    Trainer(_cfg(tmp_path, steps=2), ToyTask()).fit()
    assert not partial.exists() and keep.exists()


def test_atoken_train_names_the_way_out(tmp_path):
    run = tmp_path / "run.toml"
    run.write_text(
        f'[run]\nout_dir = "{tmp_path / "out"}"\n[model]\npreset = "tiny"\n'
        "overrides = { depth = 1, decoder_depth = 1 }\n"
        '[train]\nsteps = 1\nprecision = "fp32"\nprogress = false\n'
        '[[tasks]]\nname = "image_reconstruction"\n'
        'data = { source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }\n'
        'metrics = ["psnr"]\n'
    )
    runner = CliRunner()
    assert runner.invoke(atoken.cli.main, ["train", str(run)]).exit_code == 0
    again = runner.invoke(atoken.cli.main, ["train", str(run)])
    assert (
        again.exit_code == 1 and "RunFolderError" in again.output and "--overwrite" in again.output
    )
    replaced = runner.invoke(atoken.cli.main, ["train", str(run), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    more = runner.invoke(atoken.cli.main, ["train", str(run), "--resume", "--steps", "2"])
    assert more.exit_code == 0 and "trained 2 steps" in more.output, more.output
