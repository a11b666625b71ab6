"""Why a run stops early (atoken.engine.stop_conditions): SIGTERM, or the time limit."""

from __future__ import annotations

import json
import logging
import os
import signal

import pytest

from atoken.engine import stop_conditions
from atoken.engine.distributed import Dist, TrainingStopped
from atoken.engine.stop_conditions import StopConditions
from atoken.engine.trainer import Trainer
from tests.core.test_trainer import ToyTask, _cfg


class _Clock:
    """A monotonic clock the test moves on."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(stop_conditions, "time", clock)
    return clock


def test_no_reason_to_stop_without_a_signal_or_a_limit(clock):
    with StopConditions(0.0, Dist()) as stop:
        clock.now += 1e6  # no limit: never late
        assert stop.reason() is None


def test_the_time_limit_counts_from_the_set_up(clock):
    with StopConditions(2.0, Dist()) as stop:
        clock.now += 119.0
        assert stop.reason() is None
        clock.now += 2.0
        assert stop.reason() == "max_minutes"


def test_sigterm_wins_over_the_time_limit_and_the_old_handler_comes_back(clock, caplog):
    before = signal.getsignal(signal.SIGTERM)
    with StopConditions(1.0, Dist()) as stop:
        clock.now += 3600.0
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reason() == "sigterm"
        with caplog.at_level(logging.WARNING, logger="atoken"):
            error = stop.stopped(7)
    assert signal.getsignal(signal.SIGTERM) == before
    assert isinstance(error, TrainingStopped) and error.code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM after step 7" in str(error) and "--resume" in caplog.text


def test_a_run_out_of_time_logs_why_and_ends_as_at_its_last_step(tmp_path, clock):
    class Late(ToyTask):
        def loss(self, model, batch):
            clock.now += 40.0  # two micro-steps a step: 80 s
            return super().loss(model, batch)

    trainer = Trainer(_cfg(tmp_path, steps=12, max_minutes=3.0), Late())
    trainer.fit()
    assert trainer.step == 3  # 240 s after step 3 > 180 s
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stopped = [r for r in records if r["kind"] == "stopped"]
    assert stopped == [{"step": 3, "kind": "stopped", "stage": "train", "reason": "max_minutes"}]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000003.pt"]
    assert records[-1]["kind"] == "eval" and records[-1]["step"] == 3
