"""EMA warmup (#35 item 4), through ``atoken train``: update n of the EMA uses
``min(ema_decay, (1 + n) / (10 + n))`` unless ``[train] ema_warmup = false``, and the log and
``run.json`` say which weights (EMA or live) were evaluated and exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.engine.checkpoint import latest_checkpoint, load_checkpoint
from atoken.engine.sharded import ema_decay_at
from atoken.testing import registered_plugin

RUN = """
[run]
name = "ema"
out_dir = "{out}"
seed = 0

[model]
preset = "tiny"
modalities = ["image"]
latent_dim = 8
overrides = {{ depth = 1, decoder_depth = 1 }}

[optim]
lr = 3e-3
warmup_steps = 1

[train]
steps = {steps}
precision = "fp32"
progress = false
data_workers = 0
{train}

[[tasks]]
label = "img"
name = "image_reconstruction"
metrics = ["psnr"]
previews = 0
data = {{ source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }}
"""

#: Parameters followed step by step (a few: the run keeps every step's copy).
FOLLOWED = 4


class LiveWeights:
    """The live weights of the followed parameters after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    @atoken.hookimpl
    def atoken_step_end(self, trainer) -> None:
        named = list(trainer.module.named_parameters())[:FOLLOWED]
        self.steps.append({n: p.detach().clone() for n, p in named})


def _train(tmp_path: Path, steps: int, train: str = "") -> tuple[LiveWeights, dict, Path]:
    """Train through ``atoken train``; the printed summary says which weights it used."""
    out = tmp_path / "out"
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN.format(out=out, steps=steps, train=train))
    live = LiveWeights()
    with registered_plugin(live, name="live-weights"):
        result = CliRunner().invoke(main, ["train", str(run_file)])
    assert result.exit_code == 0, result.output
    assert len(live.steps) == steps
    which = "the live" if "ema_decay = 0" in train else "the EMA"
    assert f"evaluated and exported {which} weights" in result.output, result.output
    return live, load_checkpoint(latest_checkpoint(out / "checkpoints")), out


def _replay(steps: list[dict[str, torch.Tensor]], decay: float, warmup: bool) -> dict:
    """The EMA of these live weights: the first update copies, update n decays by
    ``ema_decay_at(decay, n)`` (the definition, computed here on its own)."""
    ema = dict(steps[0])
    for n, live in enumerate(steps[1:], start=1):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        ema = {k: d * ema[k] + (1 - d) * live[k] for k in ema}
    return ema


def _distance(a: dict, b: dict) -> float:
    return float(sum((a[k] - b[k]).double().pow(2).sum() for k in a).sqrt())


def _ema(state: dict, like: dict) -> dict:
    return {k: state["ema"][f"module.{k}"] for k in like}


def test_a_short_run_evaluates_weights_near_the_live_ones(tmp_path):
    live, state, out = _train(tmp_path, steps=30)  # ema_decay 0.999, warmup by default
    last = live.steps[-1]
    assert all(torch.equal(state["model"][k], v) for k, v in last.items())
    ema = _ema(state, last)
    for k, v in _replay(live.steps, 0.999, warmup=True).items():
        torch.testing.assert_close(ema[k], v, rtol=1e-5, atol=1e-6)
    fixed = _replay(live.steps, 0.999, warmup=False)  # what 0.999 with no warmup would hold
    start = live.steps[0]
    assert _distance(ema, last) < 0.25 * _distance(fixed, last)
    assert _distance(fixed, start) < 0.05 * _distance(last, start)  # ~97% of where it began
    record = [json.loads(line) for line in (out / "metrics.jsonl").open()][-1]
    assert record["kind"] == "eval" and record["weights"] == "ema"
    run = json.loads((out / "run.json").read_text())
    assert run["weights"] == "ema" and run["train"]["ema_warmup"] is True


def test_ema_warmup_false_keeps_the_fixed_decay(tmp_path):
    live, state, _ = _train(tmp_path, steps=5, train="ema_warmup = false")
    ema = _ema(state, live.steps[-1])
    for k, v in _replay(live.steps, 0.999, warmup=False).items():
        torch.testing.assert_close(ema[k], v, rtol=1e-5, atol=1e-6)


def test_without_an_ema_the_live_weights_are_evaluated_and_exported(tmp_path):
    _, state, out = _train(tmp_path, steps=2, train="ema_decay = 0")
    assert state["ema"] == {}
    record = [json.loads(line) for line in (out / "metrics.jsonl").open()][-1]
    assert record["kind"] == "eval" and record["weights"] == "live"
    assert json.loads((out / "run.json").read_text())["weights"] == "live"


@pytest.mark.parametrize("n", [1, 9, 90, 10_000])
def test_ema_decay_at_is_the_timm_warmup(n):
    assert ema_decay_at(0.999, n) == min(0.999, (1 + n) / (10 + n))
    assert ema_decay_at(0.999, n, warmup=False) == 0.999
