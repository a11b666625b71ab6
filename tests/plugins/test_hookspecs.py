"""Every hookspec works end to end and is documented with its exact signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import atoken
from atoken.core.registry import KINDS
from atoken.plugins import hookspecs
from atoken.testing import registered_plugin

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugin_hooks.md"
HOOKSPECS = sorted(
    name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "atoken_spec")
)
REGISTRATION = {f"register_{attr}": attr for attr, _ in KINDS}


def test_hookspecs_are_the_expected_set():
    assert set(REGISTRATION) <= set(HOOKSPECS)


@pytest.mark.parametrize("hook", sorted(REGISTRATION))
def test_registration_hook_adds_component(hook):
    attr = REGISTRATION[hook]
    sentinel = object()

    class Plugin:
        pass

    def impl(register):
        register(f"test-{attr}", lambda **kw: (sentinel, kw))

    setattr(Plugin, hook, staticmethod(atoken.hookimpl(impl)))
    with registered_plugin(Plugin(), name=f"throwaway-{attr}"):
        registry = getattr(atoken.get_registry(), attr)
        assert registry.plugin_of(f"test-{attr}") == f"throwaway-{attr}"
        assert registry.create(f"test-{attr}", a=1) == (sentinel, {"a": 1})
    assert f"test-{attr}" not in getattr(atoken.get_registry(), attr)


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_is_documented_with_its_signature(hook):
    text = DOCS.read_text()
    assert re.search(rf"^## `{hook}`", text, re.M), f"no heading for {hook} in {DOCS.name}"
    signature = f"{hook}{inspect.signature(getattr(hookspecs, hook))}"
    signature = signature.replace("'", "")
    assert signature in text, f"{DOCS.name} lacks the exact signature {signature}"


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hookspec_has_a_docstring_with_since(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Since" in doc and "Called" in doc
