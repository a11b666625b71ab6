"""``atoken report RUN_DIR``: one self-contained HTML page showing how a run went.

    write_report(run_dir, out=None, compare=(), pictures=5) -> the page's path
    RunLog.read(run_dir)                                     what a run folder recorded

The page (no server, no network, no script: every picture and curve is embedded as a data
URI, so the file can be mailed or archived alone) holds, in order:

1. the run: name, folder, steps, stages, skipped steps;
2. curves (:mod:`atoken.report_plots`): the loss, learning rate and gradient norm, then per
   task its training terms and its held-out metrics, over steps; with ``compare`` the other
   runs' curves overlaid (dashed, named in the legend);
3. the metrics of every evaluation, a table per task;
4. the pictures the run wrote (reconstruction grids, GIF/MP4 side by sides, 3D turntables),
   those of the last ``pictures`` evaluations (0: all), newest first, then the others;
5. the checkpoints (step, stage, size) and each finished stage's metrics;
6. the run file (``run.toml``, else the resolved ``run.json``).

Raises :class:`atoken.core.errors.RunFolderError` for a folder without ``metrics.jsonl`` and
for an ``out`` that exists but is not an atoken report (it is never overwritten).
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from atoken.core.errors import RunFolderError
from atoken.engine.checkpoint import list_checkpoints
from atoken.engine.run_folder import read_run_files
from atoken.report_plots import curves_svg

__all__ = ["MARKER", "RunLog", "write_report"]

#: The second line of every report: an existing file without it is not replaced.
MARKER = "<!-- atoken report -->"
PICTURES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"}
VIDEOS = {".mp4", ".webm"}
NOT_PICTURES = {"checkpoints", "stages", "tokenizer", "tensorboard"}
_STEP = re.compile(r"step_?(\d+)")
_GLOBAL = ("loss", "lr", "grad_norm")


@attrs.frozen
class RunLog:
    """What a run folder recorded: its log records, configuration and run file."""

    folder: Path
    records: tuple[dict[str, Any], ...]
    config: dict[str, Any] | None
    run_file: str | None

    @classmethod
    def read(cls, folder: str | Path) -> RunLog:
        folder = Path(folder)
        path = folder / "metrics.jsonl"
        if not path.is_file():
            what = "does not exist" if not folder.exists() else "holds no run (no metrics.jsonl)"
            raise RunFolderError(f"report: {str(folder)!r} {what}; train one with atoken train")
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill mid-write
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        config, text = read_run_files(folder)
        return cls(folder, tuple(records), config, text)

    @property
    def name(self) -> str:
        run = (self.config or {}).get("run", {})
        return str(run.get("name") or self.folder.name)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    @property
    def steps(self) -> int:
        return max((r["step"] for r in self.records), default=0)

    def stages(self) -> list[tuple[int, int, str]]:
        """``(first step, end step, name)`` of each stage: from the configuration when it
        was recorded, else from the stage names of the log records."""
        planned = (self.config or {}).get("stages") or []
        if planned:
            out, start = [], 0
            for stage in planned:
                out.append((start, start + int(stage["steps"]), str(stage["name"])))
                start += int(stage["steps"])
            return out
        out = []
        for r in self.of_kind("train"):
            if not out or out[-1][2] != r.get("stage"):
                out.append([r["step"] - 1, r["step"], str(r.get("stage", "train"))])
            out[-1][1] = r["step"]
        return [tuple(s) for s in out] or [(0, self.steps, "train")]

    def stage_of(self, step: int) -> str:
        """The stage a checkpoint after ``step`` completed steps belongs to."""
        for first, end, name in self.stages():
            if first < step <= end:
                return name
        return "?"

    def tasks(self) -> list[str]:
        """Task labels, in the order their keys first appear (``<label>/<term>``)."""
        seen: dict[str, None] = {}
        for r in self.records:
            for key in r:
                if "/" in key:
                    seen.setdefault(key.split("/", 1)[0], None)
        return list(seen)

    def keys(self, kind: str, task: str) -> list[str]:
        found: dict[str, None] = {}
        for r in self.of_kind(kind):
            for key, value in r.items():
                if key.startswith(task + "/") and isinstance(value, (int, float)):
                    found.setdefault(key, None)
        return list(found)


# ------------------------------------------------------------------ pieces of the page
def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _svg_img(svg: str, alt: str) -> str:
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f'<img class="curve" src="{uri}" alt="{html.escape(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _curves(run: RunLog, others: Sequence[RunLog]) -> str:
    runs = [run, *others]
    train = [(r.name, r.of_kind("train")) for r in runs]
    evals = [(r.name, r.of_kind("eval")) for r in runs]
    stages = [(first, name) for first, _, name in run.stages()]
    skipped = [r["step"] for r in run.of_kind("train") if r.get("skipped")]
    parts = [
        _svg_img(
            curves_svg(
                _GLOBAL,
                train,
                title="optimisation",
                stages=stages,
                skipped=skipped,
                log_y=("loss", "grad_norm"),
            ),
            "loss, learning rate and gradient norm",
        )
    ]
    for task in dict.fromkeys(t for r in runs for t in r.tasks()):
        kinds = (("train", train, "training terms"), ("eval", evals, "held-out metrics"))
        for kind, series, what in kinds:
            keys = list(dict.fromkeys(k for r in runs for k in r.keys(kind, task)))
            if keys:
                svg = curves_svg(keys, series, title=f"{task}: {what}", stages=stages)
                parts.append(_svg_img(svg, f"{task} {what}"))
    return "\n".join(parts)


def _eval_tables(run: RunLog) -> str:
    evals = run.of_kind("eval")
    if not evals:
        return "<p>No evaluation was logged.</p>"
    parts = []
    for task in run.tasks():
        keys = run.keys("eval", task)
        if keys:
            rows = [[e["step"], e.get("stage", ""), *(e.get(k, "") for k in keys)] for e in evals]
            names = [k.split("/", 1)[1] for k in keys]
            parts.append(f"<h3>{html.escape(task)}</h3>" + _table(["step", "stage", *names], rows))
    return "\n".join(parts)


def _find_pictures(folder: Path) -> tuple[dict[int, list[Path]], list[Path]]:
    by_step: dict[int, list[Path]] = {}
    other: list[Path] = []
    places = [folder, *(p for p in sorted(folder.iterdir()) if p.is_dir())]
    for place in places:
        if place.name in NOT_PICTURES and place != folder:
            continue
        for path in sorted(place.iterdir()):
            if not path.is_file() or path.suffix.lower() not in PICTURES | VIDEOS:
                continue
            match = _STEP.search(path.stem)
            if match:
                by_step.setdefault(int(match.group(1)), []).append(path)
            else:
                other.append(path)
    return by_step, other


def _figure(path: Path, folder: Path) -> str:
    label = html.escape(str(path.relative_to(folder)))
    uri = _data_uri(path)
    if path.suffix.lower() in VIDEOS:
        media = f'<video controls loop muted src="{uri}"></video>'
    else:
        media = f'<img src="{uri}" alt="{label}">'
    return f"<figure>{media}<figcaption>{label}</figcaption></figure>"


def _pictures(run: RunLog, last: int) -> str:
    by_step, other = _find_pictures(run.folder)
    steps = sorted(by_step, reverse=True)
    shown = steps if last == 0 else steps[:last]
    parts = [
        f"<h3>step {step}</h3>" + "".join(_figure(p, run.folder) for p in by_step[step])
        for step in shown
    ]
    if len(shown) < len(steps):
        parts.append(f"<p>{len(steps) - len(shown)} earlier evaluations left out "
                     "(--pictures 0 shows all).</p>")  # fmt: skip
    if other:
        parts.append("<h3>other pictures</h3>" + "".join(_figure(p, run.folder) for p in other))
    return "\n".join(parts) or "<p>The run wrote no pictures.</p>"


def _size(path: Path) -> int:
    """Bytes of a checkpoint: one file, or a sharded folder's files."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _checkpoints(run: RunLog) -> str:
    rows = []
    for path in list_checkpoints(run.folder / "checkpoints"):
        step = int(_STEP.search(path.stem).group(1))
        rows.append([path.name, step, run.stage_of(step), f"{_size(path) / 2**20:.1f}"])
    parts = [_table(["checkpoint", "step", "stage", "MiB"], rows) if rows else
             "<p>No checkpoint is kept.</p>"]  # fmt: skip
    for path in sorted((run.folder / "stages").glob("*/metrics.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        metrics = record.get("metrics", {})
        rows = [[k, v] for k, v in metrics.items()]
        early = "" if record.get("complete") else " (stopped early)"
        name = html.escape(str(record.get("stage")))
        head = f"<h3>stage {name}: step {record.get('step')}{early}</h3>"
        parts.append(head + _table(["metric", "value"], rows))
    return "\n".join(parts)


def _run_file(run: RunLog) -> str:
    if run.run_file is not None:
        return f"<p>run.toml</p><pre>{html.escape(run.run_file)}</pre>"
    if run.config is not None:
        text = json.dumps(run.config, indent=1)
        return f"<p>run.json (the resolved configuration)</p><pre>{html.escape(text)}</pre>"
    return "<p>Not recorded (a run of atoken before run.json was written).</p>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;padding:0 1em;max-width:1300px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}th{background:#f3f3f3}
img.curve{display:block;max-width:100%;margin:.6em 0}
figure{display:inline-block;margin:.4em;vertical-align:top}
figure img,figure video{max-width:620px;image-rendering:pixelated}
figcaption{font-size:.75em;color:#555}pre{background:#f7f7f7;padding:.8em;overflow:auto}
nav a{margin-right:1em}
"""


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    compare: Sequence[str | Path] = (),
    pictures: int = 5,
) -> Path:
    """Write the report of the run in ``run_dir`` (default ``run_dir/report.html``) and
    return its path; ``compare`` are other run folders whose curves are overlaid."""
    if pictures < 0:
        raise ValueError(f"pictures must be >= 0 (0: all), got {pictures}")
    run = RunLog.read(run_dir)
    others = [RunLog.read(c) for c in compare]
    out = Path(out) if out is not None else run.folder / "report.html"
    if out.exists() and not (out.is_file() and _is_report(out)):
        raise RunFolderError(
            f"report: {str(out)!r} exists and is not an atoken report; choose another --out"
        )
    train = run.of_kind("train")
    skipped = sum(1 for r in train if r.get("skipped"))
    stages = ", ".join(f"{n} (steps {a}-{b})" for a, b, n in run.stages())
    stopped = [r for r in run.records if r.get("kind") == "stopped"]
    summary = [
        ["folder", str(run.folder)],
        ["steps", run.steps],
        ["stages", stages],
        ["tasks", ", ".join(run.tasks())],
        ["skipped steps (non-finite)", skipped],
    ]
    if stopped:
        summary.append(["stopped", f"step {stopped[-1]['step']}: {stopped[-1].get('reason')}"])
    if others:
        summary.append(["compared with", ", ".join(str(o.folder) for o in others)])
    sections = [
        ("run", _table(["", ""], summary)),
        ("curves", _curves(run, others)),
        ("evaluations", _eval_tables(run)),
        ("pictures", _pictures(run, pictures)),
        ("checkpoints and stages", _checkpoints(run)),
        ("run file", _run_file(run)),
    ]
    nav = "".join(f'<a href="#{i}">{html.escape(t)}</a>' for i, (t, _) in enumerate(sections))
    body = "".join(
        f'<h2 id="{i}">{html.escape(t)}</h2>\n{part}\n' for i, (t, part) in enumerate(sections)
    )
    page = (
        f'<!DOCTYPE html>\n{MARKER}\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>atoken report: {html.escape(run.name)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>atoken report: {html.escape(run.name)}</h1><nav>{nav}</nav>\n{body}"
        "</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def _is_report(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [f.readline().strip() for _ in range(2)] == ["<!DOCTYPE html>", MARKER]
