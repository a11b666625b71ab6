"""Packaging: layout mapping, metadata, the lint ban on bare imports, the public API."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import atoken

ROOT = Path(__file__).resolve().parents[1]


def test_installed_metadata():
    meta = metadata.metadata("atoken")
    assert meta["Name"] == "atoken" and meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.10"
    assert {"xformers", "dev"} <= set(meta.get_all("Provides-Extra"))
    torch_reqs = [r for r in meta.get_all("Requires-Dist") if r.split(">")[0].strip() == "torch"]
    assert torch_reqs and not any("==" in r for r in torch_reqs)  # never an exact pin
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["atoken"] == "atoken.cli:main"


def test_installed_packages_come_from_the_four_folders():
    import atoken.core
    import atoken.losses
    import atoken.modalities
    import atoken.plugins

    for module, folder in [
        (atoken.core, "core"),
        (atoken.plugins, "plugins"),
        (atoken.modalities, "modalities"),
        (atoken.losses, "losses"),
    ]:
        assert Path(module.__file__).resolve().parent == ROOT / folder
    assert (Path(atoken.__file__).parent / "py.typed").exists()


def test_public_api_is_explicit_and_documented():
    assert atoken.__all__ == sorted(atoken.__all__)
    for name in atoken.__all__:
        obj = getattr(atoken, name)
        if callable(obj):
            assert obj.__doc__, f"atoken.{name} has no docstring"


@pytest.mark.parametrize(
    "source", ["import core\n", "from core import latent\n", "import plugins.manager\n"]
)
def test_lint_bans_bare_folder_imports(tmp_path, source):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    result = subprocess.run(
        [ruff, "check", "--config", str(ROOT / "pyproject.toml"), "--select", "TID251", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "TID251" in result.stdout


@pytest.mark.slow
def test_wheel_maps_folders_into_atoken(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("atoken-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "atoken/__init__.py",
        "atoken/py.typed",
        "atoken/core/latent.py",
        "atoken/plugins/hookspecs.py",
        "atoken/modalities/image/__init__.py",
        "atoken/modalities/video/task.py",
        "atoken/engine/trainer.py",
        "atoken/cli/train.py",
        "atoken/losses/__init__.py",
        "atoken/testing/strategies.py",
    ]:
        assert expected in names, expected
    assert not any(n.startswith(("core/", "plugins/", "tests/")) for n in names)
    # every source package (a folder with __init__.py) made it into the wheel
    folders = {
        "core": "atoken/core",
        "plugins": "atoken/plugins",
        "modalities": "atoken/modalities",
        "losses": "atoken/losses",
        "atoken": "atoken",
    }
    for src, dst in folders.items():
        for init in (ROOT / src).rglob("__init__.py"):
            rel = init.relative_to(ROOT / src).as_posix()
            assert f"{dst}/{rel}" in names, f"{src}/{rel} is missing from the wheel"
    assert any(n.startswith("atoken/core/presets/") and n.endswith(".json") for n in names)
