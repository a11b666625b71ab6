"""The distributed helpers on one process: setup, wrapping, the stop signal, config keys."""

from __future__ import annotations

import datetime
import os
import signal

import pytest
import torch

from atoken.core.errors import ConfigError
from atoken.core.transformer import Transformer
from atoken.engine.distributed import (
    Dist,
    StopSignal,
    all_reduce_sum,
    global_share,
    round_store,
    setup,
    wrap,
)
from atoken.engine.run_changes import RESUMABLE_KEYS
from atoken.engine.run_sections import DistributedConfig
from atoken.engine.runconfig import RunConfig, structure
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


def test_each_torchrun_restart_round_meets_under_its_own_store_prefix(monkeypatch):
    """torchrun's agent keeps one store across restarts: a round's keys must not be found by
    the next round (the killed rank's gloo address was, pytorch #135712)."""
    timeout = datetime.timedelta(seconds=10)
    agent = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, timeout=timeout)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent.port), "LOCAL_WORLD_SIZE": "2"}
    for key, value in {**env, "TORCHELASTIC_USE_AGENT_STORE": "True"}.items():
        monkeypatch.setenv(key, value)
    seen = []
    for restart in ("0", "1"):
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", restart)
        store = round_store(0, 2, timeout)
        seen.append(store.check(["rank_1"]))  # did an earlier round leave this key?
        store.set("rank_1", f"address of round {restart}")
    assert seen == [False, False]
    assert agent.get("atoken/round_1/rank_1") == b"address of round 1"

    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # torchrun's store is new
    assert round_store(0, 2, timeout) is None
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    with pytest.warns(RuntimeWarning, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        assert round_store(0, 4, timeout) is None  # 4 ranks, 2 here: several nodes


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
