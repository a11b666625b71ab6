"""`make demo` (atoken.demo) through its entry point, cut to two steps: it trains, compares
with PCA, and ends by writing the run's report and printing its path."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from atoken import demo
from atoken.report import MARKER


@pytest.mark.slow
def test_the_demo_ends_with_its_report(tmp_path, capsys):
    assert demo.main(["--steps", "2", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    report = tmp_path / "demo" / "report.html"
    assert f"report (open it in a browser): {report}" in out
    page = report.read_text()
    assert MARKER in page and "heldout_side_by_side.png" in page  # the demo's own picture
    run_file = (Path(demo.__file__).parents[1] / "configs" / "demo.toml").read_text()
    assert html.escape(run_file) in page  # the run file, kept as run.toml
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["steps"] == 2
