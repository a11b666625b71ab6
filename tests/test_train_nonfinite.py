"""``NonFiniteLossError`` names what went non-finite (#33 item 2), through ``atoken train``.

Two throwaway loss plugins: one that is NaN (after a finite ``mse``), one that is finite with
an infinite derivative (a sqrt at 0), so its gradient norm is NaN. The error names the task and
the first non-finite term in loss order, and its advice fits the case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import atoken
from atoken.cli import main
from atoken.testing import registered_plugin

RUN = """
[run]
name = "nonfinite"
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
log_every = 1
data_workers = 0
max_nonfinite = 1

[[tasks]]
label = "img"
name = "image_reconstruction"
losses = {losses}
metrics = []
previews = 0

[tasks.data]
source = "image_folder"
path = "{images}"
batch_size = 2
crop_min = 32
crop_max = 32
"""


def _mean(prediction) -> torch.Tensor:
    return torch.stack([p.float().mean() for p in prediction]).mean()


class NanLoss:
    """NaN, whatever it is given."""

    inputs = "samples"

    def __call__(self, prediction, target, context) -> torch.Tensor:
        return _mean(prediction) * float("nan")


class SqrtAtZero:
    """0, finite; its gradient is inf * 0 = NaN (d sqrt(z) / dz is infinite at z = 0)."""

    inputs = "samples"

    def __call__(self, prediction, target, context) -> torch.Tensor:
        return torch.sqrt(_mean(prediction) * 0.0)


class Losses:
    @atoken.hookimpl
    def register_losses(self, register) -> None:
        register("nan_a", NanLoss)
        register("nan_b", NanLoss)
        register("sqrt_at_zero", SqrtAtZero)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images32")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(root / f"{i}.png")
    return root


def _train(folder: Path, images: Path, losses: list[str]):
    run = folder / "run.toml"
    table = "[" + ", ".join(f'{{ name = "{n}" }}' for n in losses) + "]"
    run.write_text(RUN.format(out=folder / "out", images=images, losses=table))
    with registered_plugin(Losses(), name="nonfinite-losses"):
        return CliRunner().invoke(main, ["train", str(run)])


def test_a_non_finite_term_is_named_with_its_task(tmp_path, images):
    result = _train(tmp_path, images, ["mse", "nan_a", "nan_b"])
    assert result.exit_code == 1
    message = " ".join(result.output.split())  # the CLI wraps long lines
    assert "NonFiniteLossError" in message and "1 consecutive non-finite steps" in message
    assert "task 'img': loss term 'nan_a' went non-finite first (nan)" in message
    assert "nan_b" not in message and "'mse'" not in message
    assert "Check the task's data for NaN or infinite values" in message
    assert "gradient norm is not" not in message and "precision" not in message


def test_a_finite_loss_with_a_non_finite_gradient_gets_other_advice(tmp_path, images):
    result = _train(tmp_path, images, ["mse", "sqrt_at_zero"])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "NonFiniteLossError" in message
    assert "the loss is finite but its gradient norm is not" in message
    assert "grad_norm=nan" in message and "Lower the learning rate" in message
    assert "went non-finite first" not in message
    assert "precision" not in message  # the run is fp32 already


def test_the_advice_fits_the_precision_and_the_terms():
    from atoken.engine.nonfinite import nonfinite_cause

    terms = {"a/mse": 0.1, "a/loss": 0.1, "b/l1": float("inf"), "b/loss": float("inf")}
    said = nonfinite_cause(terms, float("inf"), bf16=True)
    assert said.startswith("task 'b': loss term 'l1' went non-finite first (inf)")
    assert '[train] precision = "fp32"' in said
    assert "precision" not in nonfinite_cause(terms, float("inf"), bf16=False)
    # a task's weighted sum alone; a task without a label (the trainer's own TrainTask)
    weighted = nonfinite_cause({"a/mse": 1.0, "a/loss": float("nan")}, float("nan"), bf16=False)
    assert weighted.startswith("task 'a': its weighted loss is nan while its terms are finite")
    assert nonfinite_cause({"l1": float("nan")}, float("nan"), bf16=False).startswith(
        "loss term 'l1' went non-finite first"
    )
    # every term of this process finite, the all-reduced loss not: another process's batch
    assert "another process" in nonfinite_cause({"a/mse": 1.0}, float("nan"), bf16=False)
