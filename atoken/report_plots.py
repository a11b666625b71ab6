"""The curves of ``atoken report``: matplotlib figures rendered to SVG (no display needed).

    curves_svg(panels, runs, title, stages) -> SVG text

A panel is one key (``loss``, ``image_reconstruction/l1``, ...) plotted against the step for
every run that logged it (the first run solid, the compared ones dashed, a legend naming
them); stage boundaries of the first run are dotted vertical lines, and its skipped steps
(non-finite loss) red crosses on the ``loss`` panel. Lines are thinned to at most
:data:`MAX_POINTS` points each.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_POINTS", "Series", "curves_svg"]

MAX_POINTS = 2000
#: (run name, records): the records of one run carrying the panels' keys.
Series = tuple[str, Sequence[dict[str, Any]]]


def _points(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            xs.append(int(r["step"]))
            ys.append(float(value))
    if len(xs) > MAX_POINTS:
        stride = math.ceil(len(xs) / MAX_POINTS)
        keep = list(range(0, len(xs), stride))
        if keep[-1] != len(xs) - 1:
            keep.append(len(xs) - 1)
        xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
    return xs, ys


def curves_svg(
    panels: Sequence[str],
    runs: Sequence[Series],
    *,
    title: str,
    stages: Sequence[tuple[int, str]] = (),
    skipped: Sequence[int] = (),
    log_y: Sequence[str] = (),
) -> str:
    """One figure, a panel per key of ``panels`` (three a row); ``stages`` are (first step,
    name) of the first run's stages, ``skipped`` its skipped steps, ``log_y`` the keys
    plotted on a log scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, panels, strict=False):
        for i, (name, records) in enumerate(runs):
            xs, ys = _points(records, key)
            if xs:
                ax.plot(xs, ys, "-" if i == 0 else "--", lw=1.2, label=name, marker="." if
                        len(xs) < 30 else None)  # fmt: skip
        for first, stage in stages[1:]:
            ax.axvline(first, color="0.5", ls=":", lw=1)
            ax.annotate(stage, (first, 1), xycoords=("data", "axes fraction"), fontsize=7,
                        color="0.4", va="top", rotation=90)  # fmt: skip
        if key == "loss" and skipped:
            ax.plot(skipped, [0] * len(skipped), "rx", ms=6, label="skipped step",
                    transform=ax.get_xaxis_transform())  # fmt: skip
        if key in log_y and all(v > 0 for _, records in runs for v in _points(records, key)[1]):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(runs) > 1 or (key == "loss" and skipped):
            ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: small, searchable
        fig.savefig(buffer, format="svg")
    return buffer.getvalue()
