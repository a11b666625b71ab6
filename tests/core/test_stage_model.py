"""A stage's model on one process (atoken.engine.stage_model); FSDP2 and DDP:
tests/distributed/test_cli_nproc.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from atoken.engine.distributed import Dist
from atoken.engine.run_sections import DistributedConfig
from atoken.engine.stage_model import StageModel


def _weights(ema_decay: float) -> StageModel:
    torch.manual_seed(0)
    module = nn.Linear(4, 3)
    return StageModel(module, Dist(), DistributedConfig(), torch.device("cpu"), ema_decay=ema_decay)


def _step(weights: StageModel, max_norm: float) -> torch.Tensor:
    weights.model(torch.ones(2, 4)).pow(2).sum().backward()
    return weights.clip_gradients(max_norm)


def test_one_process_trains_the_module_itself():
    weights = _weights(0.0)
    assert weights.model is weights.module and not weights.sharded and weights.ema is None
    assert weights.eval_model is weights.module is weights.export() is weights.plain(ema=True)


def test_the_gradient_norm_is_the_one_before_clipping():
    weights = _weights(0.0)
    norm = _step(weights, 0.0)  # no clipping
    grads = [p.grad for p in weights.module.parameters()]
    assert float(norm) == pytest.approx(math.sqrt(sum(float(g.pow(2).sum()) for g in grads)))
    weights.module.zero_grad()
    assert float(_step(weights, 1e-3)) == pytest.approx(float(norm))
    clipped = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in weights.module.parameters()))
    assert clipped == pytest.approx(1e-3, rel=1e-3)


def test_the_ema_is_what_is_evaluated_exported_and_handed_to_the_next_stage():
    weights = _weights(0.5)
    weights.update_ema()  # the first update copies the live weights
    with torch.no_grad():
        weights.module.weight.add_(1.0)
    weights.update_ema()  # halfway
    ema = weights.ema.module.state_dict()
    assert weights.eval_model is weights.ema.module and weights.export() is weights.ema.module
    assert not torch.equal(weights.module.weight, ema["weight"])
    plain = weights.plain(ema=True)  # the live module, the EMA weights loaded
    assert plain is weights.module and torch.equal(plain.weight, ema["weight"])


def test_evaluation_runs_in_eval_mode_without_gradients(tmp_path):
    weights = _weights(0.0)
    weights.module.train()

    def evaluate(model, step, out_dir):
        assert not model.training and not torch.is_grad_enabled() and out_dir == tmp_path
        return {"step": float(step)}

    assert weights.evaluate(evaluate, 3, tmp_path) == {"step": 3.0}
