"""``atoken train``: train a tokenizer as a run file describes, on one process or on N
(``--nproc``, :mod:`atoken.cli.distributed`); ``--plan`` prints the run's plan
(:mod:`atoken.cli.plan`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from atoken.cli.common import fail, table
from atoken.core.errors import AtokenError

__all__ = ["train"]


@click.command()
@click.argument("run_file", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--resume", is_flag=True, help="Continue from the run's newest checkpoint.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run in the output folder (its log and checkpoints; other files stay).",
)
@click.option(
    "--force", is_flag=True, help="With --resume: accept a run file that differs from the run's."
)
@click.option(
    "--resume-from",
    "resume_from",
    default=None,
    metavar="step_N",
    help="Continue from this checkpoint of the run instead of the newest (implies --resume).",
)
@click.option(
    "--fallback",
    is_flag=True,
    help="With --resume: when the newest checkpoint is damaged, continue from the newest "
    "intact one (without it a damaged checkpoint is an error naming that one).",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Override [train] steps. On --resume the learning-rate schedule keeps the length "
    "the run started with unless --reschedule.",
)
@click.option(
    "--reschedule",
    is_flag=True,
    help="With --resume: stretch (or shrink) the warmup and cosine over the new [train] "
    "steps instead of keeping the run's schedule.",
)
@click.option("--out", "out_dir", default=None, help="Override [run] out_dir.")
@click.option(
    "--device", default=None, help="Override [train] device: auto (CUDA if any), cpu, cuda[:N]."
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    help="Train on N processes of this machine (runs torchrun; [distributed] says how).",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=0,
    help="With --nproc: restart the process group this many times after a failure; each "
    "restart resumes from the last complete checkpoint.",
)
@click.option(
    "--plan",
    is_flag=True,
    help="Check the run file and print per stage its parameters, tokens, FLOPs and memory "
    "per rank (DDP and FSDP2) at --nproc ranks; nothing is trained or launched.",
)
def train(
    run_file: str,
    overrides: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    force: bool,
    resume_from: str | None,
    fallback: bool,
    steps: int | None,
    reschedule: bool,
    out_dir: str | None,
    device: str | None,
    nproc: int,
    max_restarts: int,
    plan: bool,
) -> None:
    """Train a tokenizer as RUN_FILE (TOML) describes, with KEY=VALUE overrides of its keys
    (``optim.lr=1e-4 distributed.strategy=fsdp tasks.0.data.batch_size=4``; VALUE is a TOML
    value, a bare word a string), checked like the file's and recorded in the run folder.

    On several processes: ``atoken train --nproc N RUN.toml`` or, on a cluster,
    ``torchrun --nproc-per-node N -m atoken.cli train RUN.toml`` (docs/distributed.md).
    """
    from atoken.cli.distributed import launch, restarted
    from atoken.engine.distributed import TrainingStopped
    from atoken.engine.run_keys import overrides_note
    from atoken.engine.runconfig import load_run_file
    from atoken.train import run_training

    dotted = _flag_overrides(steps=steps, device=device, out_dir=out_dir) + list(overrides)
    if plan:  # before any launch: with --plan, --nproc N plans for N ranks
        from atoken.cli.plan import print_plan

        try:
            return print_plan(run_file, nproc=nproc, dotted=dotted)
        except AtokenError as exc:
            raise fail(exc) from exc
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        ctx = click.get_current_context()
        raise SystemExit(launch(ctx.params, nproc=nproc, max_restarts=max_restarts))
    if restarted():  # torchrun restarted the group: continue from the last checkpoint
        resume, overwrite = True, False

    try:
        cfg = load_run_file(run_file, dotted=dotted)
        if resume and reschedule and not cfg.stages and not cfg.optim.schedule_steps:
            dotted.append(f"optim.schedule_steps={cfg.train.steps}")  # over the new steps
            cfg = load_run_file(run_file, dotted=dotted)
        text = Path(run_file).read_text(encoding="utf-8") + overrides_note(dotted)
        trainer, metrics = run_training(
            cfg,
            resume=resume,
            overwrite=overwrite,
            force=force,
            run_file_text=text,
            resume_from=resume_from,
            fallback=fallback,
        )
    except TrainingStopped as exc:  # SIGTERM: saved and logged; 143 as a killed process
        raise SystemExit(exc.code) from exc
    except AtokenError as exc:
        raise fail(exc) from exc
    if trainer.dist.main:  # under torchrun, rank 0 reports
        weights = "the EMA" if trainer.weights.which == "ema" else "the live"
        click.echo(f"trained {trainer.step} steps; outputs in {cfg.run.output}")
        click.echo(f"evaluated and exported {weights} weights")
        table(("metric", "value"), [(k, f"{v:.4f}") for k, v in metrics.items()])


def _flag_overrides(**flags: str | int | None) -> list[str]:
    """``--steps``, ``--device`` and ``--out`` as the dotted overrides they are."""
    from atoken.engine.run_keys import toml_value

    keys = {"steps": "train.steps", "device": "train.device", "out_dir": "run.out_dir"}
    return [f"{keys[k]}={toml_value(v)}" for k, v in flags.items() if v is not None]
