"""The TensorBoard logger: a plugin on the lifecycle hooks, like any third-party logger.

Enabled by ``[log] tensorboard = true`` in the run file; needs ``pip install
"atoken[tensorboard]"``. It writes ``out_dir/tensorboard/events.out.tfevents.*`` (rank 0 only:
the trainer calls hooks there alone):

    train/<key>     every numeric value of a step's log record (loss, lr, grad_norm, each
                    task's terms, skipped = 1 for a non-finite step), at the number of steps
                    completed (1 for the first; metrics.jsonl's ``step`` + 1)
    eval/<key>      every held-out metric, at the evaluation's step (steps completed)
    <task>/<name>   the PNG pictures the tasks wrote at that evaluation (HWC uint8)

A resumed run purges the events after the step it resumes from (it redoes them), and a fresh
run (an ``--overwrite``) all earlier ones, so nothing is counted twice (tested).
Hooks used: ``atoken_train_start`` (open the writer), ``atoken_step_end``,
``atoken_eval_end``, ``atoken_checkpoint_saved`` (flush) and ``atoken_stage_end`` (flush; close
after the last stage).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from atoken.core.errors import ConfigError
from atoken.plugins.hookspecs import hookimpl

__all__ = ["EVENTS_DIR", "writer_for"]

#: The event files' folder inside the run's ``out_dir``.
EVENTS_DIR = "tensorboard"
_writers: dict[int, Any] = {}  # id(trainer) -> SummaryWriter
_NOT_SCALARS = ("step", "kind", "stage")


def writer_for(trainer: Any) -> Any | None:
    """The open ``SummaryWriter`` of ``trainer``'s run, or None when it logs none."""
    return _writers.get(id(trainer))


def _enabled(trainer: Any) -> bool:
    log = getattr(trainer.cfg, "log", None)
    return bool(getattr(log, "tensorboard", False))


@hookimpl
def atoken_train_start(trainer: Any) -> None:
    if not _enabled(trainer):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(
            '[log] tensorboard = true needs TensorBoard: pip install "atoken[tensorboard]"'
        ) from exc
    old = _writers.pop(id(trainer), None)
    if old is not None:
        old.close()
    folder = Path(trainer.out_dir) / EVENTS_DIR
    # purge_step: TensorBoard hides the events of earlier attempts from this step on: those a
    # resumed run redoes (after its checkpoint's step), all of them for a fresh run
    _writers[id(trainer)] = SummaryWriter(
        log_dir=str(folder), purge_step=trainer.step + 1, flush_secs=10
    )


@hookimpl
def atoken_step_end(trainer: Any, step: int, logs: dict[str, Any]) -> None:
    writer = writer_for(trainer)
    if writer is None:
        return
    _scalars(writer, "train", logs, step)


@hookimpl
def atoken_eval_end(trainer: Any, step: int, metrics: dict[str, float]) -> None:
    writer = writer_for(trainer)
    if writer is None:
        return
    _scalars(writer, "eval", metrics, step)
    for folder, path in _pictures(Path(trainer.out_dir), step):
        writer.add_image(f"{folder}/{path.stem}", _read_rgb(path), step, dataformats="HWC")
    writer.flush()


@hookimpl
def atoken_checkpoint_saved(trainer: Any, step: int, path: Any) -> None:
    writer = writer_for(trainer)
    if writer is not None:
        writer.flush()


@hookimpl
def atoken_stage_end(trainer: Any, stage: str, metrics: dict[str, float]) -> None:
    writer = writer_for(trainer)
    if writer is None:
        return
    writer.flush()
    if stage == trainer.plan[-1].name:
        _writers.pop(id(trainer)).close()


def _scalars(writer: Any, prefix: str, values: dict[str, Any], step: int) -> None:
    """``<prefix>/<key>`` for every number of ``values`` but the record's own fields."""
    for key, value in values.items():
        if key not in _NOT_SCALARS and isinstance(value, (int, float)):
            writer.add_scalar(f"{prefix}/{key}", float(value), step)


def _pictures(out_dir: Path, step: int) -> list[tuple[str, Path]]:
    """``(task folder, png)`` of the pictures written for ``step`` (``*step<NNNNNN>*.png``
    in the run's task folders)."""
    tag = re.compile(rf"step0*{step}(?!\d)")
    found = []
    for folder in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.png")):
            if tag.search(path.stem):
                found.append((folder.name, path))
    return found


def _read_rgb(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
