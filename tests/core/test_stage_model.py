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


def _weights(ema_decay: float, ema_warmup: bool = True) -> StageModel:
    torch.manual_seed(0)
    module = nn.Linear(4, 3)
    cpu = torch.device("cpu")
    return StageModel(
        module, Dist(), DistributedConfig(), cpu, ema_decay=ema_decay, ema_warmup=ema_warmup
    )


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
    weights = _weights(0.5, ema_warmup=False)
    weights.update_ema()  # the first update copies the live weights
    before = weights.module.weight.detach().clone()
    with torch.no_grad():
        weights.module.weight.add_(1.0)
    weights.update_ema()  # halfway
    ema = weights.ema.module.state_dict()
    assert torch.allclose(ema["weight"], before + 0.5)
    assert weights.which == "ema" and _weights(0.0).which == "live"
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


@pytest.mark.parametrize("warmup", [True, False])
def test_the_ema_decay_warms_up_unless_told_not_to(warmup):
    weights = _weights(0.9, ema_warmup=warmup)
    weights.update_ema()  # the first update copies the live weights
    before = weights.module.weight.detach().clone()
    with torch.no_grad():
        weights.module.weight.add_(1.0)
    weights.update_ema()  # update n = 1: decay min(0.9, 2 / 11) with the warmup
    d = 2 / 11 if warmup else 0.9
    assert torch.allclose(weights.ema.module.weight, before + (1 - d))


@pytest.mark.parametrize("warmup", [True, False])
def test_the_fsdp2_ema_averages_as_the_one_process_ema(warmup):
    from atoken.engine.sharded import ShardedEMA, build_ema

    torch.manual_seed(0)
    module = nn.Linear(4, 3)
    plain = build_ema(module, 0.9, sharded=False, warmup=warmup)
    sharded = ShardedEMA(module, 0.9, warmup=warmup)  # works on plain tensors too
    for _ in range(4):
        plain.update_parameters(module)
        sharded.update_parameters(module)
        with torch.no_grad():
            module.weight.mul_(1.5).add_(0.1)
    for name, value in sharded.module_state().items():
        assert torch.allclose(plain.module.state_dict()[name], value)
