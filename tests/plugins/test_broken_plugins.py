"""A broken third-party plugin is named, not fatal to diagnosis.

Each broken plugin comes from a fake entry point next to a good one (``goodie``), in the three
ways a plugin breaks (plus one): its import raises, it implements a misspelt hook
(``check_pending``) or, the plus one, a hook with a wrong signature, or its registration hook
raises after it already registered something.
"""

from __future__ import annotations

import json
import types
from importlib import metadata

import pluggy
import pytest
from click.testing import CliRunner

import atoken
from atoken import DuplicateComponentError, PluginLoadError
from atoken.cli import main
from atoken.plugins import manager
from atoken.testing import registered_plugin


class _EntryPoint:
    """Just what the manager reads from an ``importlib.metadata.EntryPoint``."""

    def __init__(self, name: str, dist: str, load) -> None:
        self.name, self.dist, self._load = name, types.SimpleNamespace(name=dist), load

    def load(self):
        return self._load()


def _goodie():
    module = types.ModuleType("atoken_goodie")

    @atoken.hookimpl
    def register_losses(register):
        register("goodie_loss", object)

    module.register_losses = register_losses
    return module


def _import_error():
    raise ImportError("No module named 'atoken_broken'")


def _typo_module():
    module = types.ModuleType("atoken_typo")

    @atoken.hookimpl
    def register_modalities(register):
        register("typo_modality", object)

    @atoken.hookimpl
    def register_modalitys(register):  # typo: no such hookspec
        raise AssertionError("never called")

    module.register_modalities = register_modalities
    module.register_modalitys = register_modalitys
    return module


def _bad_signature_module():
    module = types.ModuleType("atoken_badsig")

    @atoken.hookimpl
    def register_bottlenecks(register):  # accepted by pluggy before the next one is rejected
        register("badsig_bottleneck", object)

    @atoken.hookimpl
    def register_modalities(register, extra):  # no such argument in the hookspec
        raise AssertionError("never called")

    module.register_bottlenecks = register_bottlenecks
    module.register_modalities = register_modalities
    return module


class _Exploding:
    @atoken.hookimpl
    def register_modalities(self, register):
        register("half_registered", object)  # must not survive the failure below

    @atoken.hookimpl
    def register_losses(self, register):
        raise RuntimeError("boom")


# kind -> (plugin name, distribution, load, stage, error type, words in the error message)
BROKEN = {
    "import": ("broken", "atoken-broken", _import_error, "import", ImportError, "atoken_broken"),
    "unknown-hook": (
        "typo",
        "atoken-typo",
        _typo_module,
        "validate",
        pluggy.PluginValidationError,
        "register_modalitys",
    ),
    "bad-signature": (
        "badsig",
        "atoken-badsig",
        _bad_signature_module,
        "validate",
        pluggy.PluginValidationError,
        "extra",
    ),
    "hook-raises": ("exploding", "atoken-exploding", _Exploding, "register", RuntimeError, "boom"),
}
#: Components the broken plugins register before failing; none may be listed.
HALF_REGISTERED = {"typo_modality", "badsig_bottleneck", "half_registered"}


@pytest.fixture(params=sorted(BROKEN))
def broken(request, fresh_plugins):
    """Install ``goodie`` and one broken plugin as entry points; yields its BROKEN row."""
    name, dist, load, *_ = row = BROKEN[request.param]
    extra = [_EntryPoint("goodie", "atoken-goodie", _goodie), _EntryPoint(name, dist, load)]
    real = metadata.entry_points

    def fake(**kw):
        return [*real(**kw), *extra] if kw.get("group") == "atoken" else real(**kw)

    fresh_plugins.setattr(manager.metadata, "entry_points", fake)
    return row


def test_cli_table_lists_good_and_broken_plugins_and_exits_1(broken):
    name, dist, _, stage, error_type, words = broken
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    table = result.stdout.split("\nComponents", 1)[0].splitlines()
    rows = {line.split()[0]: line.split() for line in table[3:]}
    assert rows["atoken.modalities.image"][-1] == "ok" and rows["goodie"][-1] == "ok"
    assert rows[name][1:] == [dist, "unknown", "FAILED"]
    assert "goodie_loss" in result.stdout and "l1" in result.stdout
    assert not any(c in result.stdout for c in HALF_REGISTERED)
    failed = result.stdout.split("Failed plugins\n", 1)[1]
    assert failed.startswith(f"{name} (distribution {dist}, at {stage}): {error_type.__name__}: ")
    assert words in failed
    assert f"ATOKEN_DISABLE_PLUGINS={name}" in result.stderr


def test_cli_json_marks_broken_plugin_and_exits_1(broken):
    name, dist, _, stage, error_type, words = broken
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)  # stdout holds the JSON alone
    assert {"atoken_version", "plugins", "components"} <= set(report)
    plugins = {p["name"]: p for p in report["plugins"]}
    assert len(plugins) == len(report["plugins"])  # each plugin once, loaded or failed
    for p in plugins.values():  # the keys of earlier versions are all still there
        assert {"name", "distribution", "version", "hooks", "error"} <= set(p)
    assert plugins["goodie"]["error"] is None
    assert plugins["goodie"]["distribution"] == "atoken-goodie"
    assert plugins["atoken.modalities.image"]["error"] is None
    error = plugins[name]["error"]
    assert plugins[name]["distribution"] == dist
    assert error["type"] == error_type.__name__ and error["stage"] == stage
    assert words in error["message"]
    assert [p for p in report["plugins"] if p["error"]] == [plugins[name]]
    components = {c["name"]: c["plugin"] for kind in report["components"].values() for c in kind}
    assert (
        components["goodie_loss"] == "goodie" and components["image"] == "atoken.modalities.image"
    )
    assert not HALF_REGISTERED & set(components) and name not in components.values()


def test_get_registry_raises_naming_plugin_distribution_and_how_to_skip(broken, fresh_plugins):
    name, dist, _, _, error_type, words = broken
    with pytest.raises(PluginLoadError) as err:
        atoken.get_registry()
    message = str(err.value)
    assert f"'{name}'" in message and f"'{dist}'" in message and words in message
    assert f"ATOKEN_DISABLE_PLUGINS={name}" in message
    assert (err.value.plugin, err.value.distribution) == (name, dist)
    assert isinstance(err.value.__cause__, error_type)
    # ... and the hint works
    fresh_plugins.setenv("ATOKEN_DISABLE_PLUGINS", name)
    manager.refresh(manager=True)
    assert "goodie_loss" in atoken.get_registry().losses


def test_diagnose_plugins_collects_the_failure_and_keeps_the_rest(broken):
    name, dist, _, stage, error_type, _ = broken
    diagnosis = manager.diagnose_plugins()
    assert not diagnosis.ok
    assert [(f.name, f.distribution, f.stage) for f in diagnosis.failures] == [(name, dist, stage)]
    assert isinstance(diagnosis.failures[0].error, error_type)
    assert diagnosis.failures[0].message.startswith(f"{error_type.__name__}: ")
    loaded = [p.name for p in diagnosis.plugins]
    assert "goodie" in loaded and "atoken.modalities.image" in loaded and name not in loaded
    assert diagnosis.registries.losses.plugin_of("goodie_loss") == "goodie"
    assert "image" in diagnosis.registries.modalities
    registered = {n for reg in diagnosis.registries.by_kind().values() for n in reg}
    assert "goodie_loss" in registered and not HALF_REGISTERED & registered


def test_clean_install_lists_no_error_and_exits_0(fresh_plugins):
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["plugins"] and all(p["error"] is None for p in report["plugins"])
    assert manager.diagnose_plugins().ok


def test_duplicate_name_is_a_failure_of_the_second_plugin(fresh_plugins):
    class DupImage:
        @atoken.hookimpl
        def register_modalities(self, register):
            register("image", object)

    extra = _EntryPoint("dup", "atoken-dup", DupImage)
    real = metadata.entry_points
    fresh_plugins.setattr(
        manager.metadata,
        "entry_points",
        lambda **kw: [*real(**kw), extra] if kw.get("group") == "atoken" else real(**kw),
    )
    with pytest.raises(DuplicateComponentError):
        atoken.get_registry()
    diagnosis = manager.diagnose_plugins()
    assert [(f.name, f.distribution, f.stage) for f in diagnosis.failures] == [
        ("dup", "atoken-dup", "register")
    ]
    assert isinstance(diagnosis.failures[0].error, DuplicateComponentError)
    assert diagnosis.registries.modalities.plugin_of("image") == "atoken.modalities.image"
    assert CliRunner().invoke(main, ["plugins"]).exit_code == 1


def test_diagnosis_sees_plugins_registered_in_process():
    with registered_plugin(_Exploding(), name="exploding-here"):
        diagnosis = manager.diagnose_plugins()
    assert [(f.name, f.stage) for f in diagnosis.failures] == [("exploding-here", "register")]
    assert manager.diagnose_plugins().ok  # unregistered again


def test_trace_names_the_plugin_of_each_hook_call(fresh_plugins, capsys):
    fresh_plugins.setenv("ATOKEN_TRACE_PLUGINS", "1")
    manager.refresh(manager=True)
    with registered_plugin(_Exploding(), name="exploding-here"):
        with pytest.raises(PluginLoadError):
            atoken.get_registry()
    lines = capsys.readouterr().err.splitlines()
    assert "atoken: hook register_modalities -> atoken.modalities.image" in lines
    assert "atoken: hook register_modalities -> exploding-here" in lines
    assert "atoken: hook register_losses -> atoken.losses.l1" in lines
    assert "atoken: hook register_losses raised RuntimeError: boom" in lines
    # one line per implementation called, in registration order
    modalities = [ln.split(" -> ")[1] for ln in lines if "hook register_modalities ->" in ln]
    assert modalities[:2] == ["atoken.modalities.image", "atoken.modalities.video"]


def test_trace_is_off_by_default(fresh_plugins, capsys):
    fresh_plugins.delenv("ATOKEN_TRACE_PLUGINS", raising=False)
    manager.refresh(manager=True)
    atoken.get_registry()
    assert "atoken: hook" not in capsys.readouterr().err
