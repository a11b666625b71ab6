"""The engine's stages on a toy task: the switch, the rebuilt optimizer and EMA, the plan."""

from __future__ import annotations

import json

import attrs
import pytest
import torch

from atoken import ConfigError
from atoken.engine.distributed import Dist
from atoken.engine.runconfig import RunConfig, structure
from atoken.engine.stages import Stages
from atoken.engine.trainer import Trainer
from tests.core.test_trainer import ToyTask


def _cfg(tmp_path, ema_decay=0.9) -> RunConfig:
    return structure(
        RunConfig,
        {
            "run": {"name": "toy", "out_dir": str(tmp_path), "seed": 1},
            "optim": {"lr": 1e-2, "warmup_steps": 1},
            "train": {
                "precision": "fp32",
                "ema_decay": ema_decay,
                "progress": False,
                "log_every": 1,
            },
            "tasks": [{"name": "toy"}],
            "stages": [
                {"name": "a", "steps": 3, "tasks": ["toy"]},
                {
                    "name": "b",
                    "steps": 2,
                    "tasks": ["toy"],
                    "optim": {"lr": 1e-3, "warmup_steps": 2},
                },
            ],
        },
        "test",
    )


def test_more_than_one_stage_needs_a_way_to_enter_them(tmp_path):
    with pytest.raises(ConfigError, match="enter_stage"):
        Trainer(_cfg(tmp_path), ToyTask())


@pytest.mark.parametrize("ema_decay", [0.9, 0.0])
def test_a_stage_starts_from_the_exported_weights_with_a_new_optimizer(tmp_path, ema_decay):
    task = ToyTask()
    seen = {}

    def enter_stage(index, model):
        assert model is trainer.module  # one process: the live model, EMA weights loaded
        exported = trainer.eval_model.state_dict()  # the old EMA (or the live model)
        live = model.state_dict()
        seen["same"] = all(torch.equal(live[k], exported[k]) for k in live)
        changed = any(not torch.equal(live[k], seen["live"][k]) for k in live)
        seen["moved"] = changed == (ema_decay > 0)  # the EMA differs from the live weights
        seen["optimizer"] = trainer.optimizer
        return task  # the same model: a stage with no transform

    class Hooks:
        def __getattr__(self, name):
            return lambda **kw: None

        def atoken_step_end(self, trainer, step, logs):
            if step == 3:  # the live weights at the end of stage "a"
                seen["live"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer = Trainer(_cfg(tmp_path, ema_decay), task, hooks=Hooks(), enter_stage=enter_stage)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainer.fit()
    assert seen["same"] and seen["moved"]
    assert trainer.optimizer is not seen["optimizer"]  # rebuilt at the switch
    assert trainer.stage.name == "b" and trainer.step == 5
    assert any(not torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert lrs[4] == pytest.approx(1e-3 / 2) and lrs[5] == pytest.approx(1e-3)  # b: 4, 5
    for name, step in [("a", 3), ("b", 5)]:
        saved = json.loads((tmp_path / "stages" / name / "metrics.json").read_text())
        assert saved["step"] == step and saved["complete"] and "err" in saved["metrics"]


def test_stages_lie_end_to_end_and_the_run_may_end_inside_one(tmp_path):
    cfg = attrs.evolve(_cfg(tmp_path), train=attrs.evolve(_cfg(tmp_path).train, steps=4))
    stages = Stages(cfg, Dist(), can_enter=True)
    assert [s.name for s in stages.plan] == ["a", "b"] and stages.starts == [0, 3, 5]
    assert [stages.end(0), stages.end(1)] == [3, 4]  # [train] steps cuts stage "b"
    record = stages.write(1, 4, {"err": 0.5}, None)
    assert record == {
        "stage": "b",
        "index": 1,
        "step": 4,
        "complete": False,
        "metrics": {"err": 0.5},
    }
    assert json.loads((tmp_path / "stages" / "b" / "metrics.json").read_text()) == record
    assert stages.write(0, 3, {}, None)["complete"]
