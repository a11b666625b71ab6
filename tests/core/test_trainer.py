"""The training engine on a toy task: exact resume, guards, checkpoints, schedule, hooks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import atoken
from atoken import ConfigError
from atoken.engine.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
from atoken.engine.optim import lr_at
from atoken.engine.runconfig import OptimConfig, RunConfig, load_run_file, structure
from atoken.engine.trainer import NonFiniteLossError, Trainer
from atoken.testing import registered_plugin


class ToyTask:
    """Autoencode random vectors through a small MLP with dropout (so RNG matters)."""

    def __init__(self, nan_steps=(), seed=0):
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 8))
        self.nan_steps = set(nan_steps)
        self.evals = []

    def batch(self, step, micro):
        g = torch.Generator().manual_seed(step * 10 + micro)
        return torch.randn(4, 8, generator=g), step

    def loss(self, model, batch):
        x, step = batch
        loss = (model(x) - x).abs().mean()
        if step in self.nan_steps:
            loss = loss * float("nan")
        return loss, {"l1": float(loss.detach())}

    def evaluate(self, model, step, out_dir):
        self.evals.append(step)
        x = torch.ones(2, 8)
        return {"err": float((model(x) - x).abs().mean())}

    def is_pretrained(self, name):
        return name.startswith("0.")


def _cfg(tmp_path: Path, **train) -> RunConfig:
    data = {
        "run": {"name": "toy", "out_dir": str(tmp_path), "seed": 3},
        "optim": {"lr": 1e-2, "warmup_steps": 2, "grad_accum": 2},
        "train": {
            "steps": 12,
            "precision": "fp32",
            "ema_decay": 0.9,
            "log_every": 1,
            "progress": False,
            **train,
        },
    }
    return structure(RunConfig, data, "top level")


class _Stop(Exception):
    pass


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path):
    full = Trainer(_cfg(tmp_path / "full", checkpoint_every=4), ToyTask())
    full.fit()

    class StopAt7:
        @atoken.hookimpl
        def atoken_step_end(self, trainer, step, logs):
            if step == 7:
                raise _Stop

    cfg = _cfg(tmp_path / "cut", checkpoint_every=4)
    with registered_plugin(StopAt7(), name="stopper"):
        with pytest.raises(_Stop):
            Trainer(cfg, ToyTask(), hooks=atoken.get_plugin_manager().hook).fit()
    resumed = Trainer(cfg, ToyTask(seed=99))  # different init: everything must come from disk
    resumed.fit(resume=True)
    assert resumed.losses == full.losses  # exact, step by step
    for a, b in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(a, b)
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "cut" / "metrics.jsonl").open()
        if json.loads(x)["kind"] == "train"
    ]
    assert steps == sorted(set(steps))  # no step logged twice after the resume


def test_lifecycle_hooks_are_called(tmp_path):
    calls = []

    class Recorder:
        @atoken.hookimpl
        def atoken_train_start(self, trainer):
            calls.append(("start", trainer.step))

        @atoken.hookimpl
        def atoken_step_end(self, trainer, step, logs):
            calls.append(("step", step, "loss" in logs))

        @atoken.hookimpl
        def atoken_eval_end(self, trainer, step, metrics):
            calls.append(("eval", step, sorted(metrics)))

        @atoken.hookimpl
        def atoken_checkpoint_saved(self, trainer, step, path):
            calls.append(("ckpt", step, Path(path).exists()))

    with registered_plugin(Recorder(), name="recorder"):
        cfg = _cfg(tmp_path, steps=4, eval_every=2, checkpoint_every=2)
        Trainer(cfg, ToyTask(), hooks=atoken.get_plugin_manager().hook).fit()
    assert calls[0] == ("start", 0)
    assert [c for c in calls if c[0] == "step"] == [("step", i, True) for i in range(1, 5)]
    assert ("eval", 2, ["err"]) in calls and ("eval", 4, ["err"]) in calls
    assert ("ckpt", 2, True) in calls and ("ckpt", 4, True) in calls


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    task = ToyTask(nan_steps={3})
    trainer = Trainer(_cfg(tmp_path / "a", steps=6), task)
    before = None

    class Snapshot:
        @atoken.hookimpl
        def atoken_step_end(self, trainer, step, logs):
            nonlocal before
            if step == 3:
                before = [p.detach().clone() for p in trainer.model.parameters()]
            if step == 4:
                assert logs.get("skipped") is True
                for p, q in zip(trainer.model.parameters(), before, strict=True):
                    assert torch.equal(p, q)  # the NaN step changed nothing

    with registered_plugin(Snapshot(), name="snapshot"):
        trainer.hooks = atoken.get_plugin_manager().hook
        trainer.fit()
    assert math.isnan(trainer.losses[3]) and trainer.nonfinite == 0

    always = Trainer(_cfg(tmp_path / "b", steps=10, max_nonfinite=3), ToyTask(nan_steps=range(10)))
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        always.fit()


def test_checkpoints_are_atomic_keep_last_k_and_typed(tmp_path):
    for step in range(5):
        save_checkpoint({"x": torch.tensor([step])}, tmp_path, step, keep=2)
    (tmp_path / ".step_00000009.pt.tmp").write_bytes(b"half written")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt", "step_00000004.pt"]
    (tmp_path / "step_00000005.pt").write_bytes(b"garbage")
    trainer = Trainer(_cfg(tmp_path / "run"), ToyTask())
    with pytest.raises(CheckpointError, match="unreadable"):
        trainer.ckpt_dir = tmp_path
        trainer.resume()
    other = Trainer(_cfg(tmp_path / "other", steps=2), ToyTask())
    other.fit()
    wrong = ToyTask()
    wrong.model = nn.Sequential(nn.Linear(8, 5), nn.GELU(), nn.Dropout(0.2), nn.Linear(5, 8))
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(_cfg(tmp_path / "other", steps=2), wrong).resume()


def test_schedule_and_encoder_lr_multiplier(tmp_path):
    cfg = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=4)
    assert [lr_at(s, cfg, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg, 20) == pytest.approx(1.0)
    assert lr_at(20, cfg, 20) == pytest.approx(0.1)
    assert lr_at(12, cfg, 20) == pytest.approx(0.55)
    trainer = Trainer(_cfg(tmp_path, steps=1), ToyTask())
    trainer.train_step()
    by_mult = {g["lr_mult"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert by_mult[0.1] == pytest.approx(0.1 * by_mult[1.0])
    decays = {(g["lr_mult"], g["weight_decay"]) for g in trainer.optimizer.param_groups}
    assert (1.0, 0.0) in decays and (1.0, 0.1) in decays  # biases not decayed


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_tracks_weights(tmp_path, warmup):
    cfg = _cfg(tmp_path, steps=1, ema_decay=0.5, ema_warmup=warmup)
    trainer = Trainer(cfg, ToyTask())
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()
    # the first update copies the weights; check the decay on a second one
    first = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step()
    d = min(0.5, (1 + 1) / (10 + 1)) if warmup else 0.5  # update n = 1, warmed up or not
    for e, p, f in zip(
        trainer.ema.module.parameters(), trainer.model.parameters(), first, strict=True
    ):
        assert torch.allclose(e, d * f + (1 - d) * p)
    assert any(not torch.equal(s, f) for s, f in zip(start, first, strict=True))


def test_run_file_errors_name_key_and_section(tmp_path):
    path = tmp_path / "run.toml"
    task = '[[tasks]]\nname = "image_reconstruction"\n'
    path.write_text("[train]\nsteps = 5\nstepz = 3\n" + task)
    with pytest.raises(ConfigError, match=r"'stepz' in section \[train\]"):
        load_run_file(path)
    path.write_text("[trian]\nsteps = 5\n" + task)
    with pytest.raises(ConfigError, match=r"'trian' in section \[top level\]"):
        load_run_file(path)
    path.write_text(task + 'losses = [{ name = "l1", weigth = 2 }]\n')
    with pytest.raises(ConfigError, match=r"'weigth' in section \[tasks\[0\].*losses\]"):
        load_run_file(path)
    path.write_text('[train]\nprecision = "fp16"\n' + task)
    with pytest.raises(ConfigError, match="precision"):
        load_run_file(path)
    path.write_text("[optim]\nlr = -1\n" + task)
    with pytest.raises(ConfigError, match=r"\[optim\] lr must be > 0"):
        load_run_file(path)
    path.write_text("not toml = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run_file(path)
    path.write_text("[train]\nsteps = 5\n")
    with pytest.raises(ConfigError, match=r"names no \[\[tasks\]\]"):
        load_run_file(path)
    path.write_text("[train]\nsteps = 5\n" + task + 'losses = [{ name = "gram", weight = 1e3 }]\n')
    cfg = load_run_file(path, train={"steps": 7})
    assert cfg.train.steps == 7 and cfg.tasks[0].losses[0].name == "gram"
    assert cfg.tasks[0].losses[0].weight == 1e3


def test_auto_precision_follows_the_hardware(tmp_path, monkeypatch):
    from atoken.engine import trainer as trainer_module

    auto = Trainer(_cfg(tmp_path, precision="auto"), ToyTask())
    monkeypatch.setattr(trainer_module, "fast_bf16", lambda device: True)
    assert auto.use_bf16
    monkeypatch.setattr(trainer_module, "fast_bf16", lambda device: False)
    assert not auto.use_bf16
    assert Trainer(_cfg(tmp_path, precision="bf16"), ToyTask()).use_bf16
    assert not Trainer(_cfg(tmp_path, precision="fp32"), ToyTask()).use_bf16


def test_run_config_round_trips_through_its_dict(tmp_path):
    cfg = _cfg(tmp_path, steps=3)
    assert structure(RunConfig, cfg.to_dict(), "again") == cfg


def test_position_tables_and_probes_are_not_decayed_whatever_their_names():
    from atoken.engine.optim import param_groups
    from atoken.engine.runconfig import OptimConfig
    from atoken.tokenizer import Tokenizer

    tok = Tokenizer.from_preset("tiny")
    groups = param_groups(tok, OptimConfig(weight_decay=0.1))
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    table, probe = tok.encoder.pos_table.weight, tok.encoder.head.probe
    assert table.ndim == 3 and probe.ndim == 2  # matrices that the ndim rule alone would decay
    assert decay[id(table)] == 0.0 and decay[id(probe)] == 0.0
    assert decay[id(tok.encoder.patch_embed.proj.weight)] == 0.1
