"""Atomic training checkpoints: write to a temporary file, fsync, rename; keep the last k.

A checkpoint is ``<dir>/step_<NNNNNNNN>.pt`` holding plain tensors and containers only, and
is loaded with ``torch.load(weights_only=True)`` (no arbitrary unpickling). A crash while
writing leaves at most a ``.tmp`` file behind, never a truncated checkpoint under a real name.
A sharded checkpoint is a folder ``<dir>/step_<NNNNNNNN>/``
(:mod:`atoken.engine.sharded_checkpoint`), complete once it holds ``meta.json``; both kinds
are listed, ordered and pruned together.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from atoken.core.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "fsync_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "remove_checkpoint",
    "remove_partial",
    "save_checkpoint",
]

_NAME = re.compile(r"^step_(\d{8})(\.pt)?$")


def _complete(path: Path, *, sharded: bool) -> bool:
    """A full checkpoint is one file; a sharded one is complete once ``meta.json`` is written."""
    return (path / "meta.json").is_file() if sharded else path.is_file()


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if (m := _NAME.match(p.name)) and _complete(p, sharded=not m.group(2))
    ]
    return [p for _, p in sorted(found)]


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint: a file, or a sharded checkpoint's folder."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def remove_partial(folder: str | Path) -> list[Path]:
    """Delete the ``.step_*.tmp`` files and folders a killed save left in ``folder``; returns
    them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    partial = [p for p in folder.iterdir() if p.name.startswith(".step_") and p.suffix == ".tmp"]
    for p in partial:
        remove_checkpoint(p)
    return partial


def fsync_dir(folder: Path) -> None:
    """fsync a directory, so a rename in it survives a power loss."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], folder: str | Path, step: int, keep: int) -> Path:
    """Write ``state`` atomically as ``step_<step>.pt`` and delete all but the newest ``keep``.

    Raises:
        CheckpointError: the file cannot be written (a full disk, no permission); the partial
            file is removed and the older checkpoints are kept.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}.pt"
    tmp = folder / f".{final.name}.{os.getpid()}.tmp"  # one name per writer
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # e.g. ENOSPC: nothing older is touched before the rename
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot write checkpoint {str(final)!r} ({exc.strerror or exc}); the previous "
            f"checkpoints in {str(folder)!r} are intact"
        ) from exc
    os.replace(tmp, final)
    fsync_dir(folder)
    for old in list_checkpoints(folder)[:-keep]:
        remove_checkpoint(old)
    return final


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and containers only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable: {exc}") from exc
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: step must be an int >= 0, got {step!r} (a damaged or "
            "foreign file)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} lacks {missing} (a damaged or foreign file): a training "
            f"checkpoint holds {list(REQUIRED_KEYS)}"
        )
    return state


#: What every training checkpoint holds (``Trainer.state_dict``); a file without one is refused.
REQUIRED_KEYS = ("step", "model", "optimizer", "losses", "nonfinite")
