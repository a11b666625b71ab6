"""``atoken train --nproc N``: the same command under torchrun, on N processes of this machine.

    atoken train --nproc 2 RUN.toml
    = python -m torch.distributed.run --standalone --nproc-per-node 2 --max-restarts 0 \\
          -m atoken.cli train RUN.toml

Each worker sees ``WORLD_SIZE`` and trains its share (:mod:`atoken.engine.distributed`). After a
failure torchrun restarts the whole group (``--max-restarts K``); a restarted worker
(``TORCHELASTIC_RESTART_COUNT`` > 0) resumes from the run's last complete checkpoint instead
of starting over.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

__all__ = ["launch", "restarted", "torchrun_command"]

#: ``atoken train`` options passed through to every worker, as (param, flag).
_FLAGS = (
    ("resume", "--resume"),
    ("overwrite", "--overwrite"),
    ("force", "--force"),
    ("fallback", "--fallback"),
    ("reschedule", "--reschedule"),
)
_VALUES = (
    ("resume_from", "--resume-from"),
    ("steps", "--steps"),
    ("out_dir", "--out"),
    ("device", "--device"),
)


def torchrun_command(params: dict[str, Any], *, nproc: int, max_restarts: int) -> list[str]:
    """The torchrun command line that runs ``atoken train`` with ``params`` on ``nproc``."""
    args = [params["run_file"]]
    args += [flag for name, flag in _FLAGS if params.get(name)]
    for name, flag in _VALUES:
        if params.get(name) is not None:
            args += [flag, str(params[name])]
    args += list(params.get("overrides") or ())  # KEY=VALUE, after the options
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "atoken.cli",
        "train",
        *args,
    ]


def launch(params: dict[str, Any], *, nproc: int, max_restarts: int) -> int:
    """Run the workers and return torchrun's exit status."""
    return subprocess.call(torchrun_command(params, nproc=nproc, max_restarts=max_restarts))


def restarted() -> bool:
    """Whether this worker was restarted by torchrun after a failure of its group."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
