"""A broken plugin no longer stops a command that does not need it.

Every ``atoken`` command runs within ``skipping_broken_plugins``: a plugin that fails to load
is left out with a ``BrokenPluginWarning`` naming it, its error and the fix, and the command
goes on. A command that needs it (a run file naming a component only it would register, a
checkpoint whose ``config.json`` records it) fails, and its error names the plugin and why it
did not load. Outside a command (the Python API) a broken plugin is still an error. The
throwaway plugins here are registered in-process; the last test installs one the way pip
does (a ``.dist-info`` on ``PYTHONPATH``) and reads a real process's stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import atoken
from atoken import PluginLoadError
from atoken.cli import main
from atoken.plugins.manager import (
    BrokenPluginWarning,
    get_registry,
    left_out_plugins,
    skipping_broken_plugins,
)
from atoken.testing import registered_plugin

RUN_FILE = """
[run]
name = "skipping"
out_dir = "{out}"

[model]
preset = "tiny"

[train]
steps = 1

[[tasks]]
name = "{task}"
data = {{ source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }}
"""


class Kaput:
    """Its registration hook raises before it registers its task ``kaput_task``."""

    @atoken.hookimpl
    def register_tasks(self, register):
        raise RuntimeError("boom")


class Misspelt:
    @atoken.hookimpl
    def register_modalitys(self, register):  # no such hook: did you mean register_modalities?
        raise AssertionError("never called")


def _run_file(tmp_path, task: str) -> str:
    path = tmp_path / f"{task}.toml"
    path.write_text(RUN_FILE.format(out=tmp_path / "out", task=task))
    return str(path)


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_command_that_does_not_need_it_goes_on_with_a_warning(tmp_path):
    run_file = _run_file(tmp_path, "image_reconstruction")
    with registered_plugin(Kaput(), name="kaput"):
        with pytest.warns(BrokenPluginWarning) as record:
            result = _invoke("train", "--plan", run_file)
        assert result.exit_code == 0, result.output
        assert "image_reconstruction" in result.output  # the plan was printed
        message = str(record[0].message)
        assert "plugin 'kaput'" in message and "at register: RuntimeError: boom" in message
        assert "ATOKEN_DISABLE_PLUGINS=kaput" in message and "fix or uninstall it" in message
        with pytest.raises(PluginLoadError, match="'kaput'"):
            get_registry()  # outside a command: still an error
    assert get_registry()  # and gone with the plugin


def test_a_run_file_naming_a_component_it_would_register_fails_naming_it(tmp_path):
    run_file = _run_file(tmp_path, "kaput_task")
    with registered_plugin(Kaput(), name="kaput"):
        with pytest.warns(BrokenPluginWarning):
            result = _invoke("train", "--plan", run_file)
    assert result.exit_code == 1
    assert "unknown task 'kaput_task'" in result.output
    assert (
        "plugin 'kaput' from distribution 'unknown' failed to load (at register: RuntimeError: "
        "boom) and was left out; it may provide what is missing" in result.output
    )


def test_a_checkpoint_recording_the_plugin_fails_naming_it(tmp_path):
    folder = tmp_path / "tokenizer"
    atoken.create_tokenizer("tiny").save_pretrained(folder)
    doc = json.loads((folder / "config.json").read_text())
    doc["config"]["modalities"].append("kaput_grid")
    doc["modality_plugins"]["kaput_grid"] = "kaput"
    (folder / "config.json").write_text(json.dumps(doc))
    args = ["reconstruct", "--checkpoint", str(folder), "--out", str(tmp_path / "out"), "x.npy"]
    with registered_plugin(Kaput(), name="kaput"):
        with pytest.warns(BrokenPluginWarning):
            result = _invoke(*args)
    assert result.exit_code == 1
    assert "CheckpointError" in result.output and "'kaput_grid' (plugin 'kaput')" in result.output
    assert "failed to load (at register: RuntimeError: boom)" in result.output
    assert "this needs it: fix or uninstall it" in result.output


def test_a_failure_that_is_not_for_want_of_a_component_gets_no_note(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nname = 3\n")
    with registered_plugin(Kaput(), name="kaput"):
        result = _invoke("train", "--plan", str(bad))
    assert result.exit_code == 1 and "ConfigError" in result.output
    assert "kaput" not in result.output


def test_a_misspelt_hook_gets_did_you_mean_through_the_command_line(tmp_path):
    with registered_plugin(Misspelt(), name="misspelt"):
        listed = _invoke("plugins")
        with pytest.warns(BrokenPluginWarning, match="did you mean 'register_modalities'"):
            planned = _invoke("train", "--plan", _run_file(tmp_path, "image_reconstruction"))
    assert listed.exit_code == 1
    failed = listed.stdout.split("Failed plugins\n", 1)[1]
    assert failed.startswith("misspelt (distribution unknown, at validate): ")
    assert "unknown hook 'register_modalitys' in plugin 'misspelt'" in failed
    assert "did you mean 'register_modalities'" in failed
    assert planned.exit_code == 0, planned.output


def test_leaving_the_block_forgets_what_was_built_without_the_plugin():
    with registered_plugin(Kaput(), name="kaput"):
        with skipping_broken_plugins(), pytest.warns(BrokenPluginWarning):
            registry = get_registry()
            assert "image_reconstruction" in registry.tasks  # the others loaded
            assert [f.name for f in left_out_plugins()] == ["kaput"]
        assert left_out_plugins() == ()
        with pytest.raises(PluginLoadError):
            get_registry()


def test_an_installed_broken_plugin_is_named_on_stderr_and_the_command_works(tmp_path):
    site = tmp_path / "site"
    info = site / "atoken_kaput-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: atoken-kaput\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[atoken]\nkaput = atoken_kaput\n")
    (site / "atoken_kaput.py").write_text("raise ImportError('atoken_kaput needs numpy 9')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    run_file = _run_file(tmp_path, "image_reconstruction")
    done = subprocess.run(
        [sys.executable, "-m", "atoken", "train", "--plan", run_file],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "BrokenPluginWarning: plugin 'kaput' from distribution 'atoken-kaput' failed to load (at "
        "import: ImportError: atoken_kaput needs numpy 9) and is left out: fix or uninstall it "
        "(pip uninstall atoken-kaput), or skip it with ATOKEN_DISABLE_PLUGINS=kaput"
    ) in done.stderr
    assert "image_reconstruction" in done.stdout
