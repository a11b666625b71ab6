"""What a training run shows while it runs: a bar per stage on a terminal, lines elsewhere.

    Progress(total=steps, mode=progress_mode(enabled), every=log_every)
    .stage(name, tasks, start, end, step)  a stage begins (or a resumed run lands in it)
    .count(model)                          count the tokens of every training forward
    .update(step, record)                  after each optimizer step
    .evaluated(record)                     after an evaluation: the metrics that failed
    .note(line)                            a line among the others
    .close()

Modes (:func:`progress_mode`): ``"bar"`` (a tqdm bar per stage: steps/s, tokens/s, loss, lr and
tqdm's ETA) when stdout is a terminal and not in CI; ``"lines"`` when stdout is redirected or
``CI`` is set: one line every ``every`` steps (and at each stage's last step) with the step in
the stage and in the run, steps/s and tokens/s since the last line, and the stage's and the
run's ETA; ``"off"`` when ``[train] progress = false`` or on ranks other than 0.

Tokens are counted by a forward pre-hook on the model: every :class:`PackedBatch` it is called
with adds its tokens (``seqlens`` summed; this rank's, ``x world`` for the global rate).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm

from atoken.core.batch import PackedBatch

__all__ = ["Progress", "format_duration", "progress_mode"]


def progress_mode(enabled: bool, stream: TextIO | None = None) -> str:
    """``"bar"``, ``"lines"`` or ``"off"`` for ``[train] progress = enabled`` (see the module
    docstring); ``stream`` defaults to stdout."""
    if not enabled:
        return "off"
    stream = sys.stdout if stream is None else stream
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
    return "bar" if is_tty and not in_ci else "lines"


def format_duration(seconds: float) -> str:
    """``3725.2 -> "1h02m"``, ``75 -> "1m15s"``, ``9.4 -> "9s"``; ``"?"`` when not finite."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """The progress of a run of ``total`` steps (see the module docstring).

    Args:
        total: the run's steps.
        mode: ``"bar"``, ``"lines"`` or ``"off"``.
        every: steps between lines in ``"lines"`` mode.
        world: processes training together (tokens/s is this rank's times ``world``).
        stream: where lines (and the bar) go; stdout for lines, stderr for the bar by default.
        clock: a monotonic clock (seconds), for tests.
    """

    def __init__(
        self,
        *,
        total: int,
        mode: str = "lines",
        every: int = 10,
        world: int = 1,
        stream: TextIO | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode must be bar, lines or off, got {mode!r}")
        self.total, self.mode, self.every, self.world = total, mode, max(1, every), world
        self.stream, self.clock = stream, clock
        self.tokens = 0  # this rank's tokens since the progress began
        self._bar: Any = None
        self._hook: Any = None
        self._stage = ("", "", 0, total)
        self._mark = (0, 0, clock())  # (step, tokens, time) of the last line
        self._began = (0, 0, clock())  # (step, tokens, time) when the stage began

    # ------------------------------------------------------------------ set-up
    def count(self, model: Any) -> None:
        """Count the tokens of every :class:`PackedBatch` ``model`` is called with (replaces
        the hook of an earlier model: a stage switch builds a new one)."""
        if self._hook is not None:
            self._hook.remove()

        def pre_hook(_module: Any, args: tuple) -> None:
            if args and isinstance(args[0], PackedBatch):
                self.tokens += int(args[0].seqlens.sum())

        self._hook = model.register_forward_pre_hook(pre_hook)

    def stage(self, name: str, tasks: str, start: int, end: int, step: int) -> None:
        """Stage ``name`` training ``tasks`` (a label for the mix) covers run steps
        ``[start, end)``; the run is at ``step``."""
        self._close_bar()
        self._stage = (name, tasks, start, end)
        now = self.clock()
        self._mark = self._began = (step, self.tokens, now)
        if self.mode == "bar":
            self._bar = tqdm(
                total=end - start,
                initial=step - start,
                desc=f"{name} [{tasks}]" if tasks else name,
                unit="step",
                dynamic_ncols=True,
                file=self.stream,
            )

    # ------------------------------------------------------------------ per step
    def update(self, step: int, record: dict[str, Any]) -> None:
        """After the optimizer step that completed ``step`` steps; ``record`` is its log."""
        if self.mode == "off":
            return
        name, tasks, start, end = self._stage
        now = self.clock()
        if self._bar is not None:
            _, began_tokens, began = self._began
            rate = (self.tokens - began_tokens) * self.world / max(now - began, 1e-9)
            self._bar.update(1)
            self._bar.set_postfix(
                loss=f"{record.get('loss', float('nan')):.4f}",
                lr=f"{record.get('lr', float('nan')):.2e}",
                tok_s=f"{rate:,.0f}",
                refresh=False,
            )
            return
        if (step - start) % self.every and step != end:
            return
        last_step, last_tokens, last_time = self._mark
        elapsed = max(now - last_time, 1e-9)
        steps_s = (step - last_step) / elapsed
        tokens_s = (self.tokens - last_tokens) * self.world / elapsed
        self._mark = (step, self.tokens, now)
        began_step, _, began = self._began
        mean = (step - began_step) / max(now - began, 1e-9)  # the stage's mean rate
        eta_stage = (end - step) / mean if mean > 0 else float("inf")
        eta_run = (self.total - step) / mean if mean > 0 else float("inf")
        where = f"{name} [{tasks}]" if tasks else name
        line = (
            f"{where} step {step - start}/{end - start} (run {step}/{self.total})"
            f"  loss {record.get('loss', float('nan')):.4f}  lr {record.get('lr', 0.0):.2e}"
            f"  {steps_s:.2f} steps/s  {tokens_s:,.0f} tokens/s"
            f"  ETA {format_duration(eta_stage)} (run {format_duration(eta_run)})"
        )
        if record.get("skipped"):
            line += "  [step skipped: non-finite]"
        print(line, file=self.stream or sys.stdout, flush=True)

    def evaluated(self, record: dict[str, Any]) -> None:
        """After an evaluation (``record``: its log record): a line per metric that failed,
        with the reason (:func:`atoken.engine.run_folder.eval_record`'s ``failed``)."""
        for key, reason in record.get("failed", {}).items():
            self.note(f"evaluation at step {record['step']}: {key} failed: {reason}")

    def note(self, line: str) -> None:
        """Print ``line`` among the progress lines (above the bar); nothing when it is off."""
        if self.mode == "off":
            return
        if self._bar is not None:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream or sys.stdout, flush=True)

    # ------------------------------------------------------------------ the end
    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        """Close the bar and stop counting tokens."""
        self._close_bar()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
