"""Save first, then evaluate (#35 item 1), through ``atoken train`` and ``atoken eval``.

A metric that fails at an evaluation is logged as failed with its reason and the run goes on;
the final checkpoint and ``tokenizer/`` are on disk before the final evaluation, so even one
that nothing catches (Ctrl-C) loses no work; a distributional metric that cannot cut a single
128 px tile from the held-out samples is a ``ConfigError`` before step 0; ``atoken eval``
skips a metric that cannot run on its data with a line saying why.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import atoken
from atoken.cli import main
from atoken.engine.checkpoint import latest_checkpoint, load_checkpoint
from atoken.plugins.metrics.base import ImageMetric, MetricFailure, guarded, split_failures
from atoken.tasks import evaluate_samples, tile_problem
from atoken.testing import registered_plugin

RUN = """
[run]
name = "failures"
out_dir = "{out}"
seed = 0

[model]
preset = "tiny"
modalities = ["image"]
latent_dim = 8
overrides = {{ depth = 1, decoder_depth = 1 }}

[optim]
lr = 1e-3
warmup_steps = 1

[train]
steps = 2
precision = "fp32"
eval_every = {eval_every}
log_every = 1
data_workers = 0

[[tasks]]
label = "img"
name = "image_reconstruction"
metrics = {metrics}
previews = 0

[tasks.data]
source = "image_folder"
path = "{images}"
batch_size = 2
crop_min = 32
crop_max = 32
"""


class Boom(ImageMetric):
    """A metric that fails when it computes (``error``: what it raises)."""

    name = "boom"
    error: BaseException = RuntimeError("injected failure")

    def reset(self) -> None:
        pass

    def update(self, prediction, target) -> None:
        pass

    def compute(self) -> dict[str, float]:
        raise self.error


class Interrupted(Boom):
    """Ctrl-C during the evaluation: nothing in atoken catches it."""

    name = "interrupted"
    error = KeyboardInterrupt()


class BoomPlugin:
    @atoken.hookimpl
    def register_metrics(self, register) -> None:
        register("boom", Boom)
        register("interrupted", Interrupted)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three 96 x 96 px images: under the 128 px tiles of distributional metrics."""
    root = tmp_path_factory.mktemp("images96")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((96, 96, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def boom():
    with registered_plugin(BoomPlugin(), name="boom-metrics"):
        yield


def _run_file(folder: Path, images: Path, metrics: list[str], eval_every: int = 0) -> Path:
    path = folder / "run.toml"
    text = RUN.format(
        out=folder / "out", images=images, metrics=json.dumps(metrics), eval_every=eval_every
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory, images, boom):
    """A 2-step run evaluated at every step with a metric that always fails."""
    folder = tmp_path_factory.mktemp("failing_run")
    run_file = _run_file(folder, images, ["psnr", "boom"], eval_every=1)
    result = CliRunner().invoke(main, ["train", str(run_file)])
    return folder / "out", result


def test_a_failing_metric_is_logged_with_its_reason_and_the_run_goes_on(failing_run):
    out, result = failing_run
    assert result.exit_code == 0, result.output
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").open()) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]  # the run went on after the first failure
    for record in evals:
        assert record["failed"] == {"img/boom": "RuntimeError: injected failure"}
        assert math.isfinite(record["img/psnr"]) and "img/boom" not in record
        assert record["weights"] == "ema"
    # the progress says so when it happens, the summary table at the end
    assert "evaluation at step 1: img/boom failed: RuntimeError: injected failure" in result.output
    assert "failed: RuntimeError: injected failure" in result.output.split("trained 2 steps")[1]
    stage = json.loads((out / "stages" / "train" / "metrics.json").read_text())
    assert stage["failed"] == {"img/boom": "RuntimeError: injected failure"}
    assert set(stage["metrics"]) == {"img/psnr"}
    # and nothing is lost: the last checkpoint and the tokenizer are on disk
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["step"] == 2
    assert (out / "tokenizer" / "model.safetensors").exists()
    assert json.loads((out / "run.json").read_text())["weights"] == "ema"


def test_the_checkpoint_and_tokenizer_are_written_before_the_final_evaluation(
    tmp_path, images, boom
):
    run_file = _run_file(tmp_path, images, ["psnr", "interrupted"])
    result = CliRunner().invoke(main, ["train", str(run_file)])
    assert result.exit_code == 1 and "Aborted" in result.output  # Ctrl-C in the final eval
    out = tmp_path / "out"
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["step"] == 2
    tokenizer = atoken.Tokenizer.from_pretrained(out / "tokenizer")
    assert tokenizer.reconstruct([torch.rand(3, 32, 32)])[0].shape == (3, 32, 32)
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert not [r for r in records if r["kind"] == "eval"]  # it never finished


def test_a_distributional_metric_without_a_tile_to_score_fails_before_step_0(tmp_path, images):
    # the repro: 96 px held-out images with fd_effnet (its weights are not needed)
    run_file = _run_file(tmp_path, images, ["psnr", "fd_effnet"])
    result = CliRunner().invoke(main, ["train", str(run_file)])
    assert result.exit_code == 1
    message = result.output
    assert "ConfigError" in message and "[[tasks]] img" in message and "'fd_effnet'" in message
    assert "128 x 128 px tiles" in message and "largest: 96 x 96" in message
    assert not (tmp_path / "out").exists()  # before step 0: nothing was trained or written


def test_atoken_eval_skips_a_metric_that_cannot_run_on_the_data(failing_run, images):
    out, _ = failing_run
    # the default metrics (psnr, ssim, fd_effnet) on images under 128 px
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(out), "--data", str(images)])
    assert result.exit_code == 0, result.output
    assert "skipped: metric 'fd_effnet' is distributional" in result.output
    assert "psnr" in result.output and "ssim" in result.output
    # a metric that raises on the data: skipped with its reason, the others reported
    args = ["eval", "--checkpoint", str(out), "--data", str(images), "--metrics", "boom,psnr"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "skipped: metric 'boom' cannot run on this data: RuntimeError: injected" in (
        result.output
    )
    assert "psnr" in result.output.split("skipped")[-1]


# ------------------------------------------------------------------ the pieces
def test_evaluate_samples_puts_a_failure_where_the_metric_would_be():
    from atoken.plugins.metrics.pixel import PSNR

    x = [torch.rand(3, 16, 16)]
    out = evaluate_samples({"boom": Boom(), "psnr": PSNR()}, x, x)
    values, failed = split_failures(out)
    assert failed == {"boom": "RuntimeError: injected failure"} and set(values) == {"psnr"}
    assert math.isnan(out["boom"]) and f"{out['boom']:.4f}" == "failed: " + failed["boom"]
    copy = pickle.loads(pickle.dumps(out["boom"]))  # the ranks share evaluations
    assert isinstance(copy, MetricFailure) and copy.reason == failed["boom"]
    with pytest.raises(KeyboardInterrupt):
        guarded("interrupted", Interrupted().compute)


def test_tile_problem_is_the_size_rule():
    fd = type("FD", (), {"distributional": True})
    small, large = torch.zeros(3, 96, 200), torch.zeros(3, 128, 130)
    assert "none of the 1 samples is (the largest: 96 x 200)" in tile_problem("fd", fd, [small])
    assert tile_problem("fd", fd, [small, large]) == ""  # one tile is enough
    assert tile_problem("psnr", Boom, [small]) == ""  # not distributional
    assert tile_problem("fd", fd, []) == "" and tile_problem("fd", fd, [object()]) == ""


def test_progress_lines_log_records_and_checkpoints_count_steps_alike(failing_run):
    """#35 item 6: "step N" means N optimizer steps done in the progress lines, in every
    ``metrics.jsonl`` record (training ones included) and in the checkpoints."""
    out, result = failing_run
    shown = [int(m) for m in re.findall(r"\(run (\d+)/2\)", result.output)]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r["step"] for r in records if r["kind"] == "train"]
    evaluated = [r["step"] for r in records if r["kind"] == "eval"]
    assert shown == trained == evaluated == [1, 2], result.output
    assert load_checkpoint(latest_checkpoint(out / "checkpoints"))["step"] == 2
