"""``atoken plugins check NAME``: the contracts of every component one plugin registered.

The components come from the registries (``plugin_of``), the contracts are those atoken's
own suite runs over every registered component (``tests/test_contracts.py``,
``tests/test_task_contracts.py``), one subclass per component and contract, written to a
temporary test module and run by pytest in this process (so a plugin registered in-process
with :func:`atoken.testing.registered_plugin` is checked too). Each component's result is
whether all of its contract tests passed, with the first failure's reason.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

import attrs

from atoken.core.errors import PluginLoadError, UnknownComponentError
from atoken.core.registry import KINDS, Registries
from atoken.plugins.manager import diagnose_plugins

__all__ = ["ComponentCheck", "check_plugin", "plugin_components"]

Outcome = Literal["passed", "failed", "skipped"]

#: kind (registry attribute) -> (module, contract class, the class attribute naming the
#: component, a fixture override or ""); a kind without a contract is listed, not checked.
_CONTRACTS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "modalities": (
        ("atoken.testing.contracts", "ModalityContract", "modality_name", ""),
        ("atoken.testing.contracts", "TokenizerRoundTripContract", "modality_name", ""),
    ),
    "bottlenecks": (("atoken.testing.contracts", "BottleneckContract", "bottleneck_name", ""),),
    "heads": (("atoken.testing.contracts", "HeadContract", "head_name", ""),),
    "losses": (("atoken.testing.contracts", "LossContract", "loss_name", "loss"),),
    "attention_backends": (
        ("atoken.testing.contracts", "AttentionBackendContract", "backend_name", ""),
    ),
    "metrics": (("atoken.scaffold.contracts", "MetricContract", "metric_name", ""),),
    "text_encoders": (
        ("atoken.testing.contracts", "TextEncoderContract", "text_encoder_name", "text_encoder"),
    ),
    "tasks": (("atoken.scaffold.contracts", "TaskContract", "task_name", ""),),
    "data_sources": (("atoken.scaffold.contracts", "DataSourceContract", "source_name", ""),),
    "stage_transforms": (("atoken.testing.stage_contracts", "StageTransformContract", "name", ""),),
    "renderers": (("atoken.testing.render_contracts", "RendererContract", "renderer_name", ""),),
}

#: Fixture overrides: a component whose pretrained weights are not on this machine is skipped,
#: as atoken's suite does.
_SKIP_WITHOUT_WEIGHTS = """
    @pytest.fixture
    def {fixture}(self):
        try:
            return atoken.get_registry().{kind}.create(self.{attr})
        except atoken.WeightsNotFoundError as exc:
            pytest.skip(str(exc))
"""


@attrs.frozen
class ComponentCheck:
    """The result of one component's contracts: ``outcome``, the tests run, and ``reason``
    (the first failure, ``test: Error: message``, or why all were skipped)."""

    kind: str
    name: str
    contracts: tuple[str, ...]
    outcome: Outcome
    tests: int = 0
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Passed or skipped (no contract failed)."""
        return self.outcome != "failed"


def plugin_components(plugin: str, registries: Registries) -> list[tuple[str, str]]:
    """``(kind, name)`` of every component ``plugin`` registered, in :data:`KINDS` order."""
    return [
        (attr, name)
        for attr, registry in registries.by_kind().items()
        for name in registry.names()
        if registry.plugin_of(name) == plugin
    ]


def _head_modality(head: str, registries: Registries) -> str:
    """A modality the head decodes: one whose default head it is, else the default one."""
    from atoken.modalities import DEFAULT_MODALITY

    modalities = registries.modalities
    users = [
        m for m in modalities.names() if getattr(modalities.get(m), "default_head", "") == head
    ]
    return users[0] if users else DEFAULT_MODALITY


def _test_module(components: list[tuple[str, str]], registries: Registries) -> tuple[str, dict]:
    """The text of a test module with one contract subclass per component and contract, and
    class name -> (kind, name, contract)."""
    lines = ["import pytest", "import atoken"]
    classes: dict[str, tuple[str, str, str]] = {}
    for kind, name in components:
        for module, contract, attr, fixture in _CONTRACTS.get(kind, ()):
            cls = f"TestCheck{len(classes)}"
            classes[cls] = (kind, name, contract)
            lines += [f"from {module} import {contract}", f"class {cls}({contract}):"]
            lines.append(f"    {attr} = {name!r}")
            if kind == "heads":
                lines.append(f"    modality_name = {_head_modality(name, registries)!r}")
            if fixture:
                lines.append(_SKIP_WITHOUT_WEIGHTS.format(fixture=fixture, kind=kind, attr=attr))
    return "\n".join(lines) + "\n", classes


class _Collector:
    """A pytest plugin that records each test's outcome under its contract class, and what
    kept the module from loading."""

    def __init__(self, classes: dict[str, tuple[str, str, str]]) -> None:
        self.results: dict[str, list[tuple[str, Outcome, str]]] = {c: [] for c in classes}
        self.errors: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        parts = report.nodeid.split("::")  # file, class, test
        if len(parts) < 3 or parts[1] not in self.results:
            return
        if report.failed:  # in setup, call or teardown
            self.results[parts[1]].append((parts[2], "failed", _reason(report)))
        elif report.skipped:
            self.results[parts[1]].append((parts[2], "skipped", _reason(report)))
        elif report.when == "call":
            self.results[parts[1]].append((parts[2], "passed", ""))

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.errors.append(_reason(report))


def _reason(report: Any) -> str:
    """The first line of a report's error (``Error: message``), or a skip's reason."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = (crash.message if crash is not None else str(longrepr)).strip()
    return text.splitlines()[0] if text else "failed"


def _result(
    kind: str, name: str, contracts: tuple[str, ...], tests: list[tuple[str, Outcome, str]]
) -> ComponentCheck:
    """A component's result from its contract tests' ``(test, outcome, reason)``."""
    check = functools.partial(ComponentCheck, dict(KINDS)[kind], name, contracts)
    failed = [(test, why) for test, outcome, why in tests if outcome == "failed"]
    if failed:
        return check("failed", len(tests), f"{failed[0][0]}: {failed[0][1]}")
    if not tests:
        return check("skipped", 0, "no contract test ran" if contracts else "no contract")
    if all(outcome == "skipped" for _, outcome, _ in tests):
        return check("skipped", len(tests), tests[0][2])
    return check("passed", len(tests))


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """Run in ``path`` (Hypothesis keeps its example database in the working directory)."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def check_plugin(plugin: str, *, output: TextIO | None = None) -> list[ComponentCheck]:
    """Run the contracts of every component ``plugin`` registered; one result per component.

    ``output`` receives pytest's own report (by default it is dropped).

    Raises:
        UnknownComponentError: no loaded plugin has that name (close matches listed).
        PluginLoadError: the plugin failed to load (its error chained).
        ModuleNotFoundError: pytest is not installed.
    """
    diagnosis = diagnose_plugins()
    for failure in diagnosis.failures:
        if failure.name == plugin:
            raise PluginLoadError(plugin, failure.distribution, failure.error) from failure.error
    loaded = sorted(p.name for p in diagnosis.plugins)
    if plugin not in loaded:
        close = difflib.get_close_matches(plugin, loaded, n=3, cutoff=0.5)
        raise UnknownComponentError("plugin", plugin, loaded, close)
    components = plugin_components(plugin, diagnosis.registries)
    try:
        import pytest
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "atoken plugins check runs the contract tests with pytest: pip install pytest"
        ) from exc
    text, classes = _test_module(components, diagnosis.registries)
    collector = _Collector(classes)
    with tempfile.TemporaryDirectory(prefix="atoken_check_") as tmp:
        folder = Path(tmp)
        # a module name of its own: a second check in this process must not reuse the first's
        module = folder / f"test_{folder.name}.py"
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        module.write_text(text, encoding="utf-8")
        args = [
            *("-q", "-p", "no:cacheprovider", "--import-mode=importlib", "--capture=sys"),
            *("-c", str(folder / "pytest.ini"), "--rootdir", str(folder), str(module)),
        ]
        report = output if output is not None else io.StringIO()
        status = pytest.ExitCode.OK
        if classes:
            with _working_directory(folder), contextlib.redirect_stdout(report):
                status = pytest.ExitCode(pytest.main(args, plugins=[collector]))
            sys.modules.pop(module.stem, None)
    if collector.errors:
        tests = [("collection", "failed", f"the contracts did not load: {collector.errors[0]}")]
    elif status in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
        tests = [("pytest", "failed", f"pytest stopped: {status.name}")]
    else:
        tests = []
    results = []
    for kind, name in components:
        mine = [c for c, (k, n, _) in classes.items() if (k, n) == (kind, name)]
        contracts = tuple(classes[c][2] for c in mine)
        ran = [t for c in mine for t in collector.results[c]]
        results.append(_result(kind, name, contracts, ran + (tests if mine else [])))
    return results
