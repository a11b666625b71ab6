"""Why a run stops before its last step: SIGTERM, or ``[train] max_minutes`` passed.

    with StopConditions(cfg.train.max_minutes, dist) as stop:   # SIGTERM is caught meanwhile
        while training:
            ...
            reason = stop.reason()       # "sigterm", "max_minutes" or None, after each step
            if reason == "sigterm":
                raise stop.stopped(step)  # TrainingStopped (exit code 143), once it is saved

Every rank asks after every step and all get the same answer (collectives): SIGTERM counts when
any rank received it (:class:`atoken.engine.distributed.StopSignal`), the time limit on rank
0's clock, taken from when the conditions were set up. A run stopped by SIGTERM saves a
checkpoint first, so ``--resume`` continues from it; one out of time just ends.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from atoken.engine.distributed import Dist, StopSignal, TrainingStopped, share_object

__all__ = ["StopConditions"]


class StopConditions:
    """SIGTERM and a time limit of ``max_minutes`` (0: none) for the ranks ``dist``; a context
    manager that catches SIGTERM while open."""

    def __init__(self, max_minutes: float, dist: Dist) -> None:
        self.max_minutes, self.dist = max_minutes, dist
        self.start = time.monotonic()
        self.signal = StopSignal()

    def __enter__(self) -> StopConditions:
        self.signal.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.signal.__exit__(*exc)

    def reason(self) -> Literal["sigterm", "max_minutes"] | None:
        """Why the run stops now, or None (a collective on several processes)."""
        if self.signal.agreed(self.dist):
            return "sigterm"
        minutes = self.max_minutes
        late = minutes and time.monotonic() - self.start > minutes * 60
        if minutes and share_object(bool(late), self.dist, "the time limit"):
            return "max_minutes"
        return None

    def stopped(self, step: int) -> TrainingStopped:
        """The error that ends a run stopped by SIGTERM after ``step`` (warned on rank 0)."""
        message = (
            f"stopped by SIGTERM after step {step}; the checkpoint of step {step} is saved "
            "(--resume continues from it)"
        )
        if self.dist.main:
            logging.getLogger("atoken").warning(message)
        return TrainingStopped(message)
