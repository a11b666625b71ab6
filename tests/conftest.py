"""Shared test setup: offline hubs, Hypothesis profiles, plugin isolation."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from hypothesis import settings

from atoken.plugins.manager import refresh
from atoken.testing.strategies import register_profiles

register_profiles()
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Rebuild the plugin manager for a test that changes the environment, and again after."""
    refresh(manager=True)
    yield monkeypatch
    monkeypatch.undo()
    refresh(manager=True)
