"""``atoken plugins check NAME``: the contracts of every component one plugin registered.

A throwaway plugin registered in-process has a good and a broken component of two kinds (a
loss without gradients, a data source whose batches change from run to run): one line per
component, FAILED with the failing test and its error, and exit status 1. An unknown NAME
lists close matches, a plugin that failed to load is named with its error, and a plugin
without components has nothing to check. The installed example plugin passes every contract
(modality, data source, task, metric), and so does a freshly generated package.
"""

from __future__ import annotations

import importlib
import sys
from typing import ClassVar

import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.data import SourceContext
from atoken.scaffold import check_plugin, new_plugin
from atoken.testing import registered_plugin


class GoodLoss:
    inputs = "samples"

    def __call__(self, prediction, target, context):
        return (prediction - target).abs().mean()


class DetachedLoss(GoodLoss):
    def __call__(self, prediction, target, context):
        return (prediction.detach() - target).abs().mean()  # no gradient: the contract fails


class GoodSource:
    modality: ClassVar[str] = "image"

    def __init__(self, *, context: SourceContext, batch_size: int = 1) -> None:
        self.seed, self.batch_size = context.seed, batch_size
        self.heldout, self.heldout_names = [torch.rand(3, 16, 16)], ("held0",)

    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1000 + step * 10 + micro)
        return [torch.rand(3, 16, 16, generator=g) for _ in range(self.batch_size)]


class RestlessSource(GoodSource):
    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        return [torch.rand(3, 16, 16) for _ in range(self.batch_size)]  # not from the seed


class Throwaway:
    @atoken.hookimpl
    def register_losses(self, register):
        register("throwaway_good_loss", GoodLoss)
        register("throwaway_detached_loss", DetachedLoss)

    @atoken.hookimpl
    def register_data_sources(self, register):
        register("throwaway_good_source", GoodSource)
        register("throwaway_restless_source", RestlessSource)


class Exploding:
    @atoken.hookimpl
    def register_losses(self, register):
        raise RuntimeError("boom")


class OnlyListens:
    @atoken.hookimpl
    def atoken_train_start(self, trainer):
        pass


def _check(name: str):
    return CliRunner().invoke(main, ["plugins", "check", name])


def test_one_line_per_component_and_status_1_when_one_fails():
    with registered_plugin(Throwaway(), name="throwaway"):
        result = _check("throwaway")
    assert result.exit_code == 1, result.output
    lines = {line.split("'")[1]: line for line in result.stdout.splitlines()}
    assert lines["throwaway_good_loss"].startswith("passed   loss 'throwaway_good_loss'")
    assert lines["throwaway_good_source"].startswith("passed   data source")
    detached = lines["throwaway_detached_loss"]
    assert detached.startswith("FAILED   loss 'throwaway_detached_loss' (LossContract: 1 test(s))")
    assert detached.endswith(
        ": test_scalar_finite_with_gradient: RuntimeError: element 0 of "
        "tensors does not require grad and does not have a grad_fn"
    )
    restless = lines["throwaway_restless_source"]
    assert restless.startswith("FAILED   data source 'throwaway_restless_source'")
    assert "test_batches_are_deterministic_and_pack" in restless and "differs between" in restless
    assert "2 of 4 component(s) of plugin 'throwaway' failed their contracts" in result.stderr


def test_check_plugin_returns_the_results():
    with registered_plugin(Throwaway(), name="throwaway"):
        results = {r.name: r for r in check_plugin("throwaway")}
    assert results["throwaway_good_loss"].ok and results["throwaway_good_loss"].tests == 1
    assert not results["throwaway_detached_loss"].ok
    assert results["throwaway_restless_source"].contracts == ("DataSourceContract",)


def test_an_unknown_name_lists_close_matches():
    with registered_plugin(Throwaway(), name="throwaway"):
        result = _check("throwawy")
    assert result.exit_code == 1
    assert "UnknownComponentError: unknown plugin 'throwawy'. Did you mean 'throwaway'?" in (
        result.output
    )
    assert "atoken.losses.l1" in result.output  # the installed plugins are listed


def test_a_plugin_that_failed_to_load_is_named_with_its_error():
    with registered_plugin(Exploding(), name="exploding"):
        result = _check("exploding")
    assert result.exit_code == 1
    assert "PluginLoadError: plugin 'exploding'" in result.output
    assert "RuntimeError: boom" in result.output


def test_a_plugin_without_components_has_nothing_to_check():
    with registered_plugin(OnlyListens(), name="listener"):
        result = _check("listener")
    assert result.exit_code == 0
    assert result.output == "plugin 'listener' registers no components: nothing to check\n"


def test_the_example_plugin_passes_every_contract():
    result = _check("depth")
    assert result.exit_code == 0, result.output
    assert sorted(line.split(" (")[0] for line in result.stdout.splitlines()) == [
        "passed   data source 'synthetic_depth'",
        "passed   metric 'depth_error'",
        "passed   modality 'depth'",
        "passed   task 'depth_reconstruction'",
    ]


def test_a_generated_package_passes_the_check(tmp_path, monkeypatch):
    folder = new_plugin("made_for_check", "loss", tmp_path)
    monkeypatch.syspath_prepend(str(folder))
    package = importlib.import_module("atoken_made_for_check")
    try:
        with registered_plugin(package, name="made_for_check"):
            result = _check("made_for_check")
    finally:
        for name in [m for m in sys.modules if m.startswith("atoken_made_for_check")]:
            del sys.modules[name]
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("passed   loss 'made_for_check' (LossContract: 1 test(s))")
