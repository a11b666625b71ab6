"""The distributed helpers on one process: setup, wrapping, the stop signal, config keys."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from atoken.core.distributed import Dist, StopSignal, all_reduce_sum, global_share, setup, wrap
from atoken.core.errors import ConfigError
from atoken.core.run_changes import RESUMABLE_KEYS
from atoken.core.run_sections import DistributedConfig
from atoken.core.runconfig import RunConfig, structure
from atoken.core.transformer import Transformer
from atoken.tokenizer import Tokenizer


def test_one_process_stays_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d, device = setup(DistributedConfig(), torch.device("cpu"))
    assert d == Dist() and not d.active and d.main and device == torch.device("cpu")
    assert global_share(7, d) == 1.0 and float(all_reduce_sum(2.5, d)) == 2.5


@pytest.mark.parametrize(
    ("env", "cfg", "match"),
    [
        ({"WORLD_SIZE": "2", "RANK": "0"}, {"backend": "nccl"}, "nccl.*CUDA"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, {}, "RANK=2"),
    ],
)
def test_a_process_group_that_cannot_work_is_a_config_error(monkeypatch, env, cfg, match):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=match):
        setup(DistributedConfig(**cfg), torch.device("cpu"))


def test_bad_distributed_keys_are_config_errors():
    with pytest.raises(ConfigError, match="strategy"):
        structure(RunConfig, {"distributed": {"strategy": "zero3"}}, "test")
    with pytest.raises(ConfigError, match="timeout"):
        structure(RunConfig, {"distributed": {"timeout": 0}}, "test")
    assert {f"distributed.{k}" for k in ("strategy", "timeout")} <= RESUMABLE_KEYS


def test_activation_checkpointing_turns_on_every_transformers_recompute():
    tok = Tokenizer.from_preset("tiny", depth=1, decoder_depth=1)
    stacks = [m for m in tok.modules() if isinstance(m, Transformer)]
    assert stacks and not any(m.grad_checkpointing for m in stacks)
    cfg = DistributedConfig(activation_checkpointing=True)
    assert wrap(tok, Dist(), cfg, torch.device("cpu")) is tok  # alone: not wrapped
    assert all(m.grad_checkpointing for m in stacks)
    tok.train()
    recon, _, _ = tok.autoencode([torch.rand(3, 32, 32)])
    recon[0].mean().backward()  # trains with recomputation
    assert tok.encoder.patch_embed.proj.weight.grad is not None


def test_sigterm_is_caught_while_training_and_the_old_handler_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.agreed(Dist())
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received and stop.agreed(Dist())
    assert signal.getsignal(signal.SIGTERM) == before
