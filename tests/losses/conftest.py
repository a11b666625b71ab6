"""Fixtures of the loss tests."""

from __future__ import annotations

import pytest

from tests.losses._fakes import hub_dir, single_threaded

__all__ = ["hub_dir", "one_thread"]


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Single-threaded compute on this shared machine (see ``single_threaded``)."""
    with single_threaded():
        yield
