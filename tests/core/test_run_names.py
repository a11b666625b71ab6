"""Names a run file gives that become folder names stay inside the run folder (#36 item 3).

``[run] name`` (``runs/<name>``), a ``[[tasks]]`` label or a label-less task's name
(``<out_dir>/<label>/``) and a ``[[stages]]`` name (``<out_dir>/stages/<name>/``) are checked
when the run file is loaded: ``atoken train`` exits non-zero with a ``ConfigError`` naming the
key, and nothing is written anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import atoken.cli
from atoken.core.errors import ConfigError
from atoken.core.validators import PATH_NAME_RULE, check_path_name
from atoken.engine.runconfig import load_run_file

ROOT = Path(__file__).resolve().parents[2]
MODEL = (
    '[model]\npreset = "tiny"\noverrides = { depth = 1, decoder_depth = 1 }\n'
    '[train]\nsteps = 1\nprecision = "fp32"\nprogress = false\n'
)
DATA = 'data = { source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }\n'


def _task(label: str | None = None, name: str = "image_reconstruction") -> str:
    line = f"label = {label!r}\n" if label is not None else ""
    return f'[[tasks]]\nname = "{name}"\n{line}{DATA}'


def _cases(outside: Path) -> list[tuple[str, str, str]]:
    """(run file body, the key the message names, id); ``outside`` lies outside the run."""
    run = f'[run]\nout_dir = "out"\n{MODEL}'
    stage = '[[stages]]\nname = {!r}\nsteps = 1\ntasks = ["image_reconstruction"]\n'
    return [
        (f"[run]\nname = '../../X'\n{MODEL}{_task()}", r"[run] name", "run-name-dotdot"),
        (f"[run]\nname = '{outside}'\n{MODEL}{_task()}", r"[run] name", "run-name-absolute"),
        (f"{run}{_task('../../../X')}", "label", "task-label-dotdot"),
        (f"{run}{_task(str(outside))}", "label", "task-label-absolute"),
        (f"{run}{_task('a/b')}", "label", "task-label-separator"),
        (f"{run}{_task('.hidden')}", "label", "task-label-hidden"),
        (f"{run}{_task(name='../../X')}", "name", "task-name-without-label"),
        (f"{run}{_task()}{stage.format('../../X')}", "name", "stage-name-dotdot"),
        (f"{run}{_task()}{stage.format(str(outside))}", "name", "stage-name-absolute"),
        (
            f"{run}{_task()}[[stages]]\nname = 'one'\nsteps = 1\n"
            f"[[stages.tasks]]\nname = 'image_reconstruction'\nlabel = '../X'\n{DATA}",
            "label",
            "stage-task-label",
        ),
    ]


_IDS = [case[2] for case in _cases(Path("/x"))]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("index", range(len(_IDS)), ids=_IDS)
def test_a_name_that_would_leave_the_run_folder_is_refused_by_atoken_train(
    tmp_path, monkeypatch, index
):
    work = tmp_path / "a" / "b" / "c"  # "../../X" from here is still inside tmp_path
    work.mkdir(parents=True)
    outside = tmp_path / "outside"
    body, key, _ = _cases(outside)[index]
    run = work / "run.toml"
    run.write_text(body)
    before = _tree(tmp_path)
    monkeypatch.chdir(work)
    result = CliRunner().invoke(atoken.cli.main, ["train", str(run)])
    assert result.exit_code != 0
    assert "ConfigError" in result.output, result.output
    assert re.search(rf"{re.escape(key)} must be 1 to 100 characters", result.output), result.output
    assert _tree(tmp_path) == before  # nothing written, inside or outside
    assert not outside.exists()


def test_the_message_names_the_task_and_the_stage(tmp_path):
    run = tmp_path / "run.toml"
    run.write_text(f"{MODEL}{_task('../X')}")
    with pytest.raises(ConfigError, match=r"\[tasks\[0\] \(image_reconstruction\)\] label"):
        load_run_file(run)
    run.write_text(
        f"{MODEL}{_task()}[[stages]]\nname = 'a b'\nsteps = 1\ntasks = ['image_reconstruction']\n"
    )
    with pytest.raises(ConfigError, match=r"\[stages\[0\] \(a b\)\] name must be"):
        load_run_file(run)


@pytest.mark.parametrize(
    "name", ["run", "demo-1", "run_2.v3", "_scratch", "A" * 100, "image.fsq", "x..y"]
)
def test_folder_names_of_the_documented_set_are_accepted(tmp_path, name):
    run = tmp_path / "run.toml"
    stage = f"[[stages]]\nname = '{name}'\nsteps = 1\ntasks = ['{name}']\n"
    run.write_text(f"[run]\nname = '{name}'\n{MODEL}{_task(name)}{stage}")
    cfg = load_run_file(run)
    assert cfg.run.name == name and cfg.tasks[0].key == name and cfg.stages[0].name == name
    assert cfg.run.output == Path("runs") / name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", "a/b", "a\\b", "/etc", "C:", ".git", "-rf", "a b", "A" * 101,
     "caf\u00e9", "x\n", "x\x00", 7, None],
)  # fmt: skip
def test_names_outside_the_documented_set_are_refused(name):
    with pytest.raises(ConfigError, match="key must be 1 to 100 characters"):
        check_path_name(name, "key")


def test_the_rule_is_documented_where_the_keys_are():
    docs = (ROOT / "docs" / "training.md").read_text("utf-8")
    assert "### Names that become folders" in docs
    assert "1 to 100 characters of ASCII letters, digits, `-`, `_` and `.`" in docs
    assert PATH_NAME_RULE.startswith("1 to 100 characters: ASCII letters, digits")
