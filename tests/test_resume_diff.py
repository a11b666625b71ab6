"""``atoken train --resume`` with a changed run file names the key paths that differ, one line
each, values capped (issue #35 item 3; atoken.engine.run_changes)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from atoken.cli import main
from atoken.engine.run_changes import MAX_LINES, VALUE_CHARS, config_changes
from atoken.engine.runconfig import RunConfig, load_run_file

RUN = """
[run]
name = "diff"
out_dir = "{out}"

[model]
preset = "tiny"
depth = 1
decoder_depth = 1

[optim]
lr = 1e-3
warmup_steps = 1

[train]
precision = "fp32"
ema_decay = 0.9
log_every = 1
progress = false
data_workers = 0

[[tasks]]
label = "img"
name = "image_reconstruction"
data = {{ source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "mse" }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 0

[[stages]]
name = "one"
steps = 1
tasks = ["img"]

[[stages]]
name = "two"
steps = 1
optim = {{ lr = 2e-4 }}

[[stages.tasks]]
label = "img_two"
name = "image_reconstruction"
data = {{ source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "mse", weight = 1.0 }}, {{ name = "l1", weight = 0.5 }}]
metrics = ["psnr"]
previews = 0
"""


def _write(tmp_path: Path, text: str = RUN) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text.format(out=tmp_path / "run"))
    return path


def _saved(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), default=str)


def test_a_resume_with_a_changed_loss_weight_names_that_key_path_only(tmp_path):
    path = _write(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["train", str(path)]).exit_code == 0
    path.write_text(path.read_text().replace("weight = 0.5", "weight = 0.25"))
    result = runner.invoke(main, ["train", str(path), "--resume"])
    assert result.exit_code == 1 and "RunFolderError" in result.output
    changes = [line.strip() for line in result.output.splitlines() if line.startswith("  ")]
    assert changes == ["stages[1].tasks[0].losses[1].weight: 0.5 -> 0.25"]
    assert "--force" in result.output and len(result.output) < 500  # was 6.4 KB
    forced = runner.invoke(main, ["train", str(path), "--resume", "--force"])
    assert forced.exit_code == 0 and "trained 2 steps" in forced.output, forced.output


def test_each_changed_key_path_is_named_once_in_file_order(tmp_path):
    old = load_run_file(_write(tmp_path))
    text = RUN.replace('{{ name = "kl", weight = 1e-8 }}', '{{ name = "kl", weight = 0 }}')
    new = load_run_file(_write(tmp_path, text.replace("lr = 2e-4", "lr = 1e-4")))
    assert config_changes(_saved(old), new) == [
        "tasks[0].losses[1].weight: 1e-08 -> 0",
        "stages[0].tasks[0].losses[1].weight: 1e-08 -> 0",  # the stage trains [[tasks]] "img"
        "stages[1].optim.lr: 0.0002 -> 0.0001",
    ]


def test_an_array_of_another_length_is_named_whole_with_capped_values(tmp_path):
    old = load_run_file(_write(tmp_path))
    fewer = RUN.replace(', {{ name = "l1", weight = 0.5 }}', "")
    (line,) = config_changes(_saved(old), load_run_file(_write(tmp_path, fewer)))
    assert line.startswith("stages[1].tasks[0].losses: [{'name': 'mse', ")
    assert len(line) <= len("stages[1].tasks[0].losses: ") + 2 * VALUE_CHARS + len(" -> ")
    assert "... -> " in line  # the old losses, cut


def test_the_resume_diff_is_capped_in_lines_and_keeps_resumable_keys_out(tmp_path):
    cfg = load_run_file(_write(tmp_path))
    old = json.loads(_saved(cfg))
    old["tasks"][0]["data"] = {f"k{i}": i for i in range(MAX_LINES + 5)}
    old["train"]["steps"] = 7  # resumable: not a change
    lines = config_changes(json.dumps(old), cfg)
    assert len(lines) == MAX_LINES + 1 and lines[-1] == "... and 9 more"  # 25 + 4 added
    assert lines[0] == "tasks[0].data.source: (absent) -> 'photos'"
    assert not any(line.startswith("train.") for line in lines)
