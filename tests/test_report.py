"""Looking at a run through the public entry points: `atoken train` prints its progress when
output is not a terminal, writes `run.toml`/`run.json` and (with `[log] tensorboard = true`)
TensorBoard event files read back by TensorBoard's own reader; `atoken report` writes one
self-contained HTML page of it, also overlaying another run's curves."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from atoken.cli import main
from atoken.engine.progress import Progress, format_duration, progress_mode
from atoken.report import MARKER, RunLog, write_report

RUN = """
[run]
name = "{name}"
out_dir = "{out}"

[model]
preset = "tiny"
latent_dim = 16
overrides = {{ depth = 1, decoder_depth = 1 }}

[optim]
lr = {lr}
warmup_steps = 1

[train]
steps = 4
precision = "fp32"
ema_decay = 0
eval_every = 2
checkpoint_every = 2
log_every = 2

[log]
tensorboard = {tensorboard}

[[tasks]]
name = "image_reconstruction"
losses = [{{ name = "l1", weight = 1.0 }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 1

[tasks.data]
source = "image_folder"
path = "{source}"
batch_size = 2
crop_min = 32
crop_max = 32
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    for i in range(3):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


def _train(tmp: Path, images: Path, name: str, *, lr: float = 1e-3, tb: bool = False):
    run = tmp / f"{name}.toml"
    run.write_text(
        RUN.format(name=name, out=tmp / name, lr=lr, source=images, tensorboard=str(tb).lower())
    )
    result = CliRunner().invoke(main, ["train", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp / name, result.output, run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, images):
    tmp = tmp_path_factory.mktemp("runs")
    first = _train(tmp, images, "first", tb=True)
    second = _train(tmp, images, "second", lr=3e-3)
    return first, second


def test_progress_is_printed_as_lines_when_output_is_not_a_terminal(runs):
    (_, output, _), _ = runs
    lines = [x for x in output.splitlines() if "steps/s" in x]
    assert len(lines) == 2, output  # log_every = 2 of 4 steps
    assert lines[0].startswith("train [image_reconstruction] step 2/4 (run 2/4)")
    tokens = [float(m.replace(",", "")) for m in re.findall(r"([\d,.]+) tokens/s", output)]
    assert len(tokens) == 2 and all(t > 0 for t in tokens)  # counted by the forward hook
    assert "ETA" in lines[-1] and "step 4/4" in lines[-1]


def test_the_run_folder_keeps_its_run_file_and_configuration(runs):
    (folder, _, run_file), _ = runs
    assert (folder / "run.toml").read_text() == run_file.read_text()
    config = json.loads((folder / "run.json").read_text())
    assert config["log"] == {"tensorboard": True} and config["train"]["steps"] == 4


def _images_of(page: str) -> list[tuple[str, bytes]]:
    found = re.findall(r'<img[^>]* src="data:([^;"]+);base64,([^"]+)"', page)
    return [(mime, base64.b64decode(data)) for mime, data in found]


def test_atoken_report_writes_one_self_contained_page(runs):
    (folder, _, _), _ = runs
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    page_path = folder / "report.html"
    assert f"report: {page_path}" in result.output
    page = page_path.read_text()
    assert page.splitlines()[:2] == ["<!DOCTYPE html>", MARKER]
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert not re.search(r'src="(?!data:)', page)  # nothing loaded from elsewhere
    pictures = _images_of(page)
    curves = [data.decode() for mime, data in pictures if mime == "image/svg+xml"]
    titles = ["optimisation", "image_reconstruction: training terms",
              "image_reconstruction: held-out metrics"]  # fmt: skip
    assert len(curves) == 3 and all(any(t in c for c in curves) for t in titles)
    assert "image_reconstruction/psnr" in curves[2] and "grad_norm" in curves[0]
    pngs = [data for mime, data in pictures if mime == "image/png"]
    assert len(pngs) == 2  # recon_step000002.png and recon_step000004.png
    for data in pngs:
        assert Image.open(io.BytesIO(data)).size[0] > 32
    assert page.index("step 4</h3>") < page.index("step 2</h3>")  # newest first
    assert "step_00000004.pt" in page and "psnr" in page
    assert "tensorboard = true" in page  # the run file itself
    log = RunLog.read(folder)
    assert log.steps == 4 and log.stage_of(4) == "train" and log.tasks() == ["image_reconstruction"]


def test_report_compares_runs_and_refuses_to_overwrite_other_files(runs, tmp_path):
    (first, _, _), (second, _, _) = runs
    out = tmp_path / "both.html"
    result = CliRunner().invoke(
        main, ["report", str(first), "--out", str(out), "--compare", str(second), "--pictures", "1"]
    )
    assert result.exit_code == 0, result.output
    page = out.read_text()
    curves = [d.decode() for m, d in _images_of(page) if m == "image/svg+xml"]
    assert all("first" in c and "second" in c for c in curves)  # both runs in every legend
    assert len([m for m, _ in _images_of(page) if m == "image/png"]) == 1  # --pictures 1
    assert "1 earlier evaluations left out" in page
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    refused = CliRunner().invoke(main, ["report", str(first), "--out", str(mine)])
    assert refused.exit_code == 1 and "is not an atoken report" in refused.output
    assert mine.read_text() == "<p>my notes</p>"
    missing = CliRunner().invoke(main, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    stray = CliRunner().invoke(main, ["report", str(first), str(second)])
    assert stray.exit_code == 2 and "did you mean --compare" in stray.output


def test_tensorboard_events_are_read_back_by_tensorboard(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (folder, _, _), (second, _, _) = runs
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/image_reconstruction/l1"} <= set(
        tags["scalars"]
    )
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]  # steps completed
    psnr = events.Scalars("eval/image_reconstruction/psnr")
    assert [e.step for e in psnr] == [2, 4] and all(np.isfinite(e.value) for e in psnr)
    logged = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in logged if r["kind"] == "eval"][-1]
    assert psnr[-1].value == pytest.approx(last_eval["image_reconstruction/psnr"], rel=1e-6)
    image_tags = tags["images"]
    assert "image_reconstruction/recon_step000004" in image_tags
    (picture,) = events.Images("image_reconstruction/recon_step000004")
    stored = Image.open(folder / "image_reconstruction" / "recon_step000004.png")
    assert (picture.width, picture.height) == stored.size
    assert not (second / "tensorboard").exists()  # off unless the run file says so


def test_tensorboard_counts_no_step_twice_after_a_resume_or_an_overwrite(tmp_path, images):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, _, run = _train(tmp_path, images, "again", tb=True)
    (folder / "checkpoints" / "step_00000004.pt").unlink()  # as if killed after step 2
    for extra in (["--resume"], ["--overwrite"]):
        result = CliRunner().invoke(main, ["train", str(run), *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        events = EventAccumulator(str(folder / "tensorboard"))
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4], extra
        assert [e.step for e in events.Scalars("eval/image_reconstruction/psnr")] == [2, 4]


def test_progress_modes_and_lines(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    assert progress_mode(False, Terminal()) == "off"
    assert progress_mode(True, Terminal()) == "bar"
    assert progress_mode(True, io.StringIO()) == "lines"
    monkeypatch.setenv("CI", "true")
    assert progress_mode(True, Terminal()) == "lines"

    now = [0.0]
    out = io.StringIO()
    progress = Progress(total=20, mode="lines", every=5, stream=out, clock=lambda: now[0])
    progress.stage("s1", "a+b", 10, 20, 10)  # a resumed run at step 10 of a 10-step stage
    for step in range(11, 21):
        now[0] += 0.5  # 2 steps/s
        progress.tokens += 100
        progress.update(step, {"loss": 0.5, "lr": 1e-3, "skipped": step == 20})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("s1 [a+b] step 5/10 (run 15/20)")
    assert "2.00 steps/s" in lines[0] and "200 tokens/s" in lines[0]
    assert "ETA 2s (run 2s)" in lines[0]  # 5 steps left at 2 steps/s
    assert "[step skipped: non-finite]" in lines[1]
    assert [format_duration(s) for s in (9.4, 75, 3725, float("inf"))] == [
        "9s", "1m15s", "1h02m", "?"
    ]  # fmt: skip

    bar = Terminal()
    progress = Progress(total=3, mode="bar", stream=bar)
    progress.stage("train", "image_reconstruction", 0, 3, 0)
    for step in (1, 2, 3):
        progress.tokens += 64
        progress.update(step, {"loss": 0.25, "lr": 2e-4})
    progress.close()
    text = bar.getvalue()
    assert "train [image_reconstruction]" in text and "tok_s=" in text and "3/3" in text


def _chromium() -> str | None:
    return next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )


def test_the_report_loads_in_headless_chromium(runs, tmp_path):
    """Every picture and curve of the page loads, with no console error; a full-page
    screenshot is taken (``make test`` installs Debian's chromium when it can)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on PATH (make test installs Debian's chromium as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    (first, _, _), (second, _, _) = runs
    report = write_report(first, tmp_path / "report.html", compare=[second])
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url[:80]}"))
            page.goto(report.as_uri(), wait_until="load")
            count = page.evaluate("document.images.length")
            broken = page.evaluate(
                "Array.from(document.images)"
                ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
            )
            sizes = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert count == 3 + 2 and not broken, broken  # 3 curves, 2 reconstruction grids
    assert all(w > 100 for w in sizes) and not errors, errors
    picture = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert picture.shape[0] > 900 and picture.std() > 10  # a long page, not a blank one
