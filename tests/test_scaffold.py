"""``atoken plugins new``: each kind of package passes its own tests as written, uninstalled.

The tests of a generated package run in a fresh interpreter, from another folder, with only
the package's folder added to ``PYTHONPATH`` (nothing is pip-installed): its ``conftest.py``
registers the plugin in-process, as a plain checkout's tests must. The generated code keeps
the style rules (ruff clean with its own ``pyproject.toml``, no private reach into atoken) for
the shortest and the longest NAME; a bad NAME, a taken one and an existing folder are clean
errors that write nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from atoken.cli import main
from atoken.scaffold import KINDS, new_plugin
from atoken.scaffold.writer import package_files

#: What each kind writes besides pyproject.toml, README.md and tests/conftest.py.
FILES = {
    "modality": {"train.toml", "PKG/__init__.py", "PKG/modality.py", "PKG/data.py"},
    "loss": {"PKG/__init__.py", "PKG/loss.py"},
    "head": {"PKG/__init__.py", "PKG/head.py"},
    "source": {"train.toml", "PKG/__init__.py", "PKG/source.py"},
}


def _new(*args: str):
    return CliRunner().invoke(main, ["plugins", "new", *args])


def test_the_kinds_are_the_documented_four():
    assert set(KINDS) == set(FILES) == {"modality", "loss", "head", "source"}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_generated_package_passes_its_own_tests_uninstalled(kind, tmp_path):
    name = f"made_{kind}"
    result = _new(name, "--kind", kind, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    folder = tmp_path / f"atoken-made-{kind}"
    assert f"wrote {folder}" in result.output
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    wanted = {f.replace("PKG", f"atoken_{name}") for f in FILES[kind]}
    common = {"pyproject.toml", "README.md", "tests/conftest.py", f"tests/test_{name}.py"}
    assert written == wanted | common
    pyproject = (folder / "pyproject.toml").read_text()
    assert f'{name} = "atoken_{name}"' in pyproject  # the entry point
    paths = [str(folder), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(folder / "tests"),
    ]
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


@pytest.mark.parametrize("name", ["x", "a_name_of_twenty_four_ch"])
@pytest.mark.parametrize("kind", sorted(FILES))
def test_the_generated_code_is_lint_clean_and_reaches_nothing_private(kind, name, tmp_path):
    from tests.test_layering import private_reaches

    folder = new_plugin(name, kind, tmp_path)
    for path in folder.rglob("*.py"):
        module = path.relative_to(folder).with_suffix("").as_posix().replace("/", ".")
        source = path.read_text()
        assert not private_reaches(module, source, is_package=path.name == "__init__.py")
        assert "\t" not in source and all(len(line) <= 100 for line in source.splitlines())
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    for args in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        done = subprocess.run([ruff, *args], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_placeholder_is_filled():
    for kind in FILES:
        for path, text in package_files("blob", kind).items():
            assert "{{" not in text and "PACKAGE" not in path and "NAME" not in path, path


@pytest.mark.parametrize(
    "name", ["my-plugin", "Blob", "1x", "class", "a" * 25, "", "blob.x", "_blob", "blob_"]
)
def test_a_name_that_is_not_a_short_lower_case_identifier_is_refused(name, tmp_path):
    result = _new(name, "--kind", "loss", "--out", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "ConfigError" in result.output and "lower-case Python identifier" in result.output
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_refusal_suggests_an_identifier():
    result = _new("My-Plugin", "--kind", "loss", "--out", "unused")
    assert "(e.g. 'my_plugin')" in result.output


def test_an_existing_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "atoken-blob"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    result = _new("blob", "--kind", "head", "--out", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "OutputFolderError" in result.output and "never overwrites" in result.output
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    assert (folder / "mine.txt").read_text() == "keep me"


def test_a_name_a_plugin_already_registered_is_refused(tmp_path):
    result = _new("l1", "--kind", "loss", "--out", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert "loss 'l1' is already registered by plugin 'atoken.losses.l1'" in result.output
    assert not list(tmp_path.iterdir())


def test_an_unknown_kind_is_a_usage_error(tmp_path):
    result = _new("blob", "--kind", "metric", "--out", str(tmp_path))
    assert result.exit_code == 2 and "'metric' is not one of" in result.output
