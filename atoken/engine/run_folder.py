"""A run's folder: what atoken writes there, and how a fresh run or a resume treats it.

    out_dir/metrics.jsonl               one JSON record per line (train, eval, stopped)
    out_dir/run.json                    the run's configuration, resolved (RunConfig.to_dict),
                                        and ``weights``: those evaluated and exported ("ema"
                                        or "live")
    out_dir/run.toml                    the run file it was started from (``atoken train``)
    out_dir/checkpoints/step_N.pt       atomic checkpoints (atoken.engine.checkpoint)
    out_dir/stages/<stage>/metrics.json a finished stage's held-out metrics
    out_dir/stages/<stage>/tokenizer/   its exported tokenizer
    out_dir/tokenizer/                  the run's exported tokenizer, written with the final
                                        checkpoint before the final evaluation
    out_dir/<task label>/               each task's pictures
    <parent>/.<out_dir name>.atoken-lock  who trains into out_dir now (:class:`RunFolderLock`)

Only these are atoken's: ``--overwrite`` deletes them and nothing else. One process writes a
run folder at a time: a training (rank 0 under torchrun) holds the folder's lock from before
it looks at the folder to its last write, so a second ``atoken train`` into it, fresh, with
``--resume`` or with ``--overwrite``, is a ``RunFolderError`` naming the holder.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from atoken.core.errors import RunFolderError, StoreLockedError
from atoken.data.store_lock import StoreLock
from atoken.engine.checkpoint import list_checkpoints, remove_checkpoint
from atoken.engine.distributed import Dist, on_main
from atoken.plugins.metrics.base import split_failures

__all__ = [
    "RunFolderLock",
    "append_record",
    "eval_record",
    "hold",
    "prepare_run_folder",
    "read_run_files",
    "truncate_log",
    "write_run_files",
    "write_stage",
    "write_tokenizer",
]

RUN_JSON, RUN_TOML = "run.json", "run.toml"


class RunFolderLock:
    """The one-writer lock of the run folder ``out_dir`` (a context manager; re-entrant).

    It is the stores' lock (:class:`atoken.data.store_lock.StoreLock`): an ``flock`` on the
    hidden sibling ``.<name>.atoken-lock`` that records the holder's pid, host and start time.
    The kernel releases it when the holder exits, however it dies, so a lock is never stale;
    taking it is one atomic call, so of two processes started at the same instant one wins.

    Raises:
        RunFolderError: another process holds it (named: pid, host, since).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._lock = StoreLock(str(self.out_dir))
        self._depth = 0

    def acquire(self) -> RunFolderLock:
        """Take the lock (at once or not at all); a holder taking it again nests."""
        if self._depth == 0:
            try:
                self._lock.acquire()
            except StoreLockedError as exc:
                raise RunFolderError(
                    f"{self.out_dir} is being written by another training ({exc.holder}); "
                    "wait for it to finish or stop it, or choose another [run] out_dir"
                ) from exc
        self._depth += 1
        return self

    def release(self) -> None:
        """Give up one hold; the last one releases the lock."""
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            self._lock.release()

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def hold(lock: RunFolderLock, d: Dist) -> Iterator[None]:
    """``lock`` held by rank 0 for the ``with`` block (a refusal is raised on every rank)."""

    def take() -> None:
        lock.acquire()

    on_main(take, d, "locking the run folder")
    try:
        yield
    finally:
        if d.main:
            lock.release()


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record to the log at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def eval_record(metrics: dict[str, float], step: int, stage: str, weights: str) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of an evaluation: which ``weights`` were evaluated
    (``"ema"`` or ``"live"``), the metrics, and ``failed``: the reason of each metric that
    failed (a :class:`~atoken.plugins.metrics.base.MetricFailure`), when any did."""
    values, failed = split_failures(metrics)
    record = {"step": step, "kind": "eval", "stage": stage, "weights": weights, **values}
    return record | ({"failed": failed} if failed else {})


def truncate_log(path: Path, step: int) -> None:
    """Drop the log's records after ``step`` (those of steps a run resumed from the checkpoint
    of ``step`` redoes) and lines torn by a kill mid-write, so no step appears twice. A
    record's ``step`` is the number of steps done when it was written (a training record's:
    with its own step), so what happened at ``step`` itself is kept."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill mid-write
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


def write_run_files(out_dir: Path, config: dict[str, Any], text: str | None = None) -> None:
    """``out_dir/run.json`` (the resolved configuration) and, when given, ``run.toml`` (the
    run file's text), replacing those of an earlier attempt of this run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_JSON).write_text(json.dumps(config, indent=1, default=str) + "\n")
    if text is not None:
        (out_dir / RUN_TOML).write_text(text)


def read_run_files(out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(configuration, run file text)`` of the run in ``out_dir``; None where not written
    (runs of atoken < 0.4, or a torn file)."""
    config = text = None
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((out_dir / RUN_JSON).read_text())
    with contextlib.suppress(OSError):
        text = (out_dir / RUN_TOML).read_text()
    return config, text


def prepare_run_folder(out_dir: Path, *, overwrite: bool = False) -> None:
    """Make ``out_dir`` ready for a fresh run.

    A folder that holds a run (``metrics.jsonl``, checkpoints, stage outputs, a saved
    tokenizer) is refused unless ``overwrite``, which deletes only those files of atoken's
    (the saved tokenizer is replaced at the end); anything else in the folder is left alone.

    Raises:
        RunFolderError: the folder holds a run and ``overwrite`` is false.
    """
    metrics, stages = out_dir / "metrics.jsonl", out_dir / "stages"
    found = [p for p in (metrics, out_dir / "tokenizer", stages) if p.exists()]
    found += list_checkpoints(out_dir / "checkpoints")
    if found and not overwrite:
        names = ", ".join(str(p.relative_to(out_dir)) for p in found[:4])
        raise RunFolderError(
            f"{out_dir} holds a run ({names}{', ...' if len(found) > 4 else ''}); "
            "pass --resume to continue it or --overwrite to replace it (or choose another "
            "[run] out_dir)"
        )
    metrics.unlink(missing_ok=True)
    for name in (RUN_JSON, RUN_TOML):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(stages, ignore_errors=True)
    for ckpt in list_checkpoints(out_dir / "checkpoints"):
        remove_checkpoint(ckpt)


def write_stage(out_dir: Path, record: dict[str, Any], model: Any) -> Path:
    """``out_dir/stages/<record["stage"]>/``: ``metrics.json`` (the record) and the model's
    ``save_pretrained`` folder ``tokenizer`` when it has one. Returns the folder."""
    folder = out_dir / "stages" / record["stage"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(record, indent=1))
    write_tokenizer(folder, model)
    return folder


def write_tokenizer(folder: Path, model: Any) -> None:
    """``folder/tokenizer``: ``model.save_pretrained``'s folder, when the model has one."""
    save = getattr(model, "save_pretrained", None)
    if callable(save):
        save(folder / "tokenizer")
