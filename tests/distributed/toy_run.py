"""The engine on a toy task, alone or under torchrun: the global batch split unevenly over
the ranks (rank 0 takes 3 of 8 rows), so only a loss normalised by the global count matches
one process holding the whole batch.

    python toy_run.py OUT_DIR STEPS [STRATEGY] [--resume]
    python -m torch.distributed.run --standalone --nproc-per-node 2 toy_run.py OUT_DIR ...

Rank 0 writes OUT_DIR/result.json: the losses and the flat parameters (live and EMA).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn

from atoken.cli.distributed import restarted
from atoken.engine.runconfig import RunConfig, structure
from atoken.engine.trainer import Trainer

GLOBAL_BATCH = 8


def _fault(rank: int, step: int, micro: int) -> None:
    """``TOY_FAULT=kind:rank:step`` (first attempt only): ``hang`` sleeps, ``kill`` sends
    SIGKILL, ``term`` sends SIGTERM to this process at that rank's batch of that step."""
    kind, _, rest = os.environ.get("TOY_FAULT", "").partition(":")
    if not kind or restarted() or micro != 0:
        return
    at_rank, at_step = (int(x) for x in rest.split(":"))
    if (rank, step) != (at_rank, at_step):
        return
    if kind == "hang":
        time.sleep(600)
    os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGTERM)


class Toy(nn.Module):
    """An MLP and a layer no step uses (it must keep no gradient: AdamW skips it)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SliceTask:
    def __init__(self, rank: int, world: int) -> None:
        torch.manual_seed(0)
        self.model = Toy()
        edges = [0, 3, GLOBAL_BATCH] if world == 2 else [0, GLOBAL_BATCH]
        self.rows = slice(edges[rank], edges[rank + 1])
        self.rank = rank

    def batch(self, step: int, micro: int) -> torch.Tensor:
        _fault(self.rank, step, micro)
        g = torch.Generator().manual_seed(step * 10 + micro)
        return torch.randn(GLOBAL_BATCH, 8, generator=g)[self.rows]

    def count(self, batch: torch.Tensor) -> int:
        return len(batch)

    def loss(self, model: nn.Module, x: torch.Tensor):
        loss = ((model(x) - x) ** 2).mean(1).mean()  # a mean per row, then over the rows
        return loss, {"mse": float(loss.detach())}

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        x = torch.ones(2, 8)
        return {"err": float(((model(x) - x) ** 2).mean())}

    def is_pretrained(self, name: str) -> bool:
        return name.startswith("body.0.")


def main() -> None:
    out, steps = sys.argv[1], int(sys.argv[2])
    strategy = sys.argv[3] if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else "ddp"
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cfg = structure(
        RunConfig,
        {
            "run": {"name": "toy", "out_dir": out, "seed": 0},
            "optim": {
                "lr": 3e-2,
                "warmup_steps": 1,
                "grad_accum": 2,
                "grad_clip": 0.5,
                # TOY_SCHEDULE_STEPS: the schedule of the whole run when this one stops early
                # (the first part of a run that is resumed later); 0: its own steps
                "schedule_steps": int(os.environ.get("TOY_SCHEDULE_STEPS", 0)),
            },
            "train": {
                "steps": steps,
                "precision": "fp32",
                "ema_decay": 0.8,
                "log_every": 1,
                "checkpoint_every": 2,
                "checkpoint_format": os.environ.get("TOY_FORMAT", "full"),
                "progress": False,
                "data_workers": 0,  # TOY_FAULT must strike the training process, not a worker
            },
            "distributed": {
                "strategy": strategy,
                "timeout": float(os.environ.get("TOY_TIMEOUT", 60)),
                # "auto" would compute in bf16 on a CPU with AVX-512-BF16
                "param_dtype": os.environ.get("TOY_PARAM_DTYPE", "fp32"),
            },
        },
        "toy",
    )
    trainer = Trainer(cfg, SliceTask(rank, world))
    trainer.fit(resume="--resume" in sys.argv or restarted())
    state = trainer.state_dict()
    if trainer.dist.main:
        flat = {k: v.flatten().tolist() for k, v in state["model"].items()}
        ema = {k: v.flatten().tolist() for k, v in state["ema"].items() if k != "n_averaged"}
        result = {"losses": trainer.losses, "model": flat, "ema": ema, "world": trainer.dist.world}
        Path(out, "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
