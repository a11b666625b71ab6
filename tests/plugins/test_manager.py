"""The plugin manager: loading order, registries, errors, disabling and tracing."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from importlib import metadata

import pytest

import atoken
from atoken import DuplicateComponentError, PluginLoadError, UnknownComponentError
from atoken.core.registry import KINDS, Registry
from atoken.plugins import manager
from atoken.testing import registered_plugin


def test_registries_are_typed_and_hold_builtins():
    reg = atoken.get_registry()
    for attr, kind in KINDS:
        registry = getattr(reg, attr)
        assert isinstance(registry, Registry) and registry.kind == kind
    assert "image" in reg.modalities.names()
    assert reg.modalities.plugin_of("image") == "atoken.modalities.image"
    modality = reg.modalities.create("image", patch_size=8)
    assert modality.patch_size == 8 and reg.modalities.get("image") is type(modality)


def test_nothing_loads_at_import_time():
    code = (
        "import sys, atoken\n"
        "from atoken.plugins import manager\n"
        "print(manager._manager is None, 'atoken.modalities.image' in sys.modules,"
        " 'atoken_example_depth' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


class _DupImage:
    @atoken.hookimpl
    def register_modalities(self, register):
        register("image", object)


def test_duplicate_name_names_both_plugins():
    with registered_plugin(_DupImage(), name="dup-plugin"):
        with pytest.raises(DuplicateComponentError) as err:
            atoken.get_registry()
    message = str(err.value)
    assert "atoken.modalities.image" in message and "dup-plugin" in message
    assert err.value.plugins == ("atoken.modalities.image", "dup-plugin")
    assert "image" in atoken.get_registry().modalities  # restored after the block


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownComponentError) as err:
        atoken.get_registry().modalities.create("imgae")
    assert "'image'" in str(err.value) and "imgae" in str(err.value)
    assert err.value.close_matches == ["image"]
    assert isinstance(err.value, LookupError)


class _FakeDist:
    name = "atoken-broken"


class _BrokenEntryPoint:
    name = "broken"
    dist = _FakeDist()

    def load(self):
        raise ImportError("No module named 'atoken_broken'")


def test_plugin_that_fails_to_import_raises_plugin_load_error(fresh_plugins):
    real = metadata.entry_points

    def fake(**kw):
        return [*real(**kw), _BrokenEntryPoint()] if kw.get("group") == "atoken" else real(**kw)

    fresh_plugins.setattr(manager.metadata, "entry_points", fake)
    with pytest.raises(PluginLoadError) as err:
        atoken.get_registry()
    assert "'broken'" in str(err.value) and "'atoken-broken'" in str(err.value)
    assert isinstance(err.value.__cause__, ImportError)
    # ... and disabling it by distribution name makes the rest load
    fresh_plugins.setenv("ATOKEN_DISABLE_PLUGINS", "atoken-broken")
    manager.refresh(manager=True)
    assert "image" in atoken.get_registry().modalities


def test_misspelt_hook_is_an_error_not_silence(fresh_plugins):
    module = types.ModuleType("atoken_typo_plugin")

    @atoken.hookimpl
    def register_modalitys(register):  # typo: no such hookspec
        raise AssertionError("never called")

    module.register_modalitys = register_modalitys
    fresh_plugins.setitem(sys.modules, "atoken_typo_plugin", module)
    fresh_plugins.setattr(
        manager, "DEFAULT_PLUGINS", (*manager.DEFAULT_PLUGINS, "atoken_typo_plugin")
    )
    with pytest.raises(PluginLoadError, match="atoken_typo_plugin") as err:
        atoken.get_plugin_manager()
    assert "register_modalitys" in str(err.value)
    assert "did you mean 'register_modalities'" in str(err.value)  # the close hookspec


def test_registration_hook_that_raises_is_wrapped():
    class Exploding:
        @atoken.hookimpl
        def register_losses(self, register):
            raise RuntimeError("boom")

    with registered_plugin(Exploding(), name="exploding"):
        with pytest.raises(PluginLoadError, match="exploding") as err:
            atoken.get_registry()
    assert isinstance(err.value.__cause__, RuntimeError)


def test_disable_plugins_env_blocks_builtin_and_entrypoint(fresh_plugins):
    fresh_plugins.setenv(
        "ATOKEN_DISABLE_PLUGINS",
        "atoken.modalities.image, atoken.modalities.video, atoken.modalities.mesh, depth, "
        "occupancy, pointcloud",
    )
    manager.refresh(manager=True)
    assert atoken.get_registry().modalities.names() == []
    names = [p.name for p in atoken.list_plugins()]
    assert "depth" not in names and "atoken.modalities.image" not in names


def test_trace_env_traces_hook_calls(fresh_plugins, capsys):
    fresh_plugins.setenv("ATOKEN_TRACE_PLUGINS", "1")
    manager.refresh(manager=True)
    atoken.get_registry()
    err = capsys.readouterr().err
    assert "register_modalities" in err


def test_cli_json_lists_builtins_and_example_plugin():
    exe = [sys.executable, "-m", "atoken.cli", "plugins", "--json"]
    out = subprocess.run(exe, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    plugins = {p["name"]: p for p in report["plugins"]}
    assert plugins["atoken.modalities.image"]["distribution"] == "atoken"
    assert plugins["depth"]["distribution"] == "atoken-example-depth"
    assert plugins["depth"]["version"] == metadata.version("atoken-example-depth")
    modalities = {c["name"]: c["plugin"] for c in report["components"]["modalities"]}
    assert modalities == {
        "image": "atoken.modalities.image",
        "video": "atoken.modalities.video",
        "mesh": "atoken.modalities.mesh",
        "depth": "depth",
        "occupancy": "occupancy",
        "pointcloud": "pointcloud",
    }


def test_cli_table_and_console_script():
    exe = [sys.executable, "-c", "from atoken.cli import main; main()", "plugins"]
    out = subprocess.run(exe, capture_output=True, text=True, check=True)
    assert "atoken-example-depth" in out.stdout and "Components" in out.stdout
    ep = [e for e in metadata.entry_points(group="console_scripts") if e.name == "atoken"]
    assert ep and ep[0].value == "atoken.cli:main"


def test_an_unknown_name_to_disable_is_a_warning_with_close_matches(fresh_plugins):
    fresh_plugins.setenv("ATOKEN_DISABLE_PLUGINS", "dpeth, atoken.losses.gram")
    with pytest.warns(UserWarning, match=r"'dpeth'.*did you mean 'depth'"):
        manager.refresh(manager=True)
        registry = atoken.get_registry()
    assert "depth" in registry.modalities  # the typo disabled nothing
    assert "gram" not in registry.losses  # the known name still disabled its plugin


def test_python_dash_m_atoken_runs_the_command():
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "atoken", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "checkpoint" in done.stdout
