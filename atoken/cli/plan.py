"""``atoken train RUN.toml --plan [--nproc N]``: the plan of a run as tables, nothing trained.

Three tables, stage by stage (:func:`atoken.engine.plan.plan_run` computes them): the stages
(parameters, samples, tokens and model FLOPs per optimizer step on all N ranks), their tasks
(per rank and micro-batch) and the memory per rank under DDP and FSDP2 in GB (10^9 bytes);
then what could not be counted. With ``--plan``, ``--nproc N`` plans for N ranks and launches
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from atoken.cli.common import table
from atoken.engine.plan import RunPlan, plan_run

__all__ = ["echo_plan", "print_plan"]

_MEMORY_ROWS = (
    ("parameters", "parameters"),
    ("gradients", "gradients"),
    ("optimizer (AdamW)", "optimizer"),
    ("EMA", "ema"),
    ("frozen networks", "frozen"),
    ("weights for compute", "compute"),
    ("activations", "activations"),
)


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f}{unit}"
    return f"{n:,.0f}"


def _flops(n: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} "


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f}"


def echo_plan(plan: RunPlan, source: str = "the run") -> None:
    """Print ``plan`` as the three tables and its notes."""
    precision = "bf16" if plan.bf16 else "fp32"
    fsdp = "bf16" if plan.fsdp_bf16 else "fp32"
    checkpointing = "on" if plan.activation_checkpointing else "off"
    click.echo(
        f"plan of {source} on {plan.nproc} rank(s): {precision} autocast (FSDP2 compute {fsdp}), "
        f"activation checkpointing {checkpointing}; nothing trained, allocated or read"
    )
    click.echo("\nstages (per optimizer step, all ranks)")
    table(
        ("stage", "steps", "trainable", "frozen", "samples/step", "tokens/step", "FLOP/step"),
        [
            (
                s.name,
                f"{s.steps:,}",
                _count(s.trainable),
                _count(s.frozen),
                f"{s.samples_per_step:,.0f}",
                _count(s.tokens_per_step),
                _flops(s.flops_per_step),
            )
            for s in plan.stages
        ],
    )
    click.echo("\ntasks (per rank and micro-batch)")
    table(
        ("stage", "task", "samples", "tokens/sample", "max", "micro/step", "runs", "FLOP"),
        [
            (
                s.name,
                t.label,
                str(t.samples),
                f"{t.tokens_mean:,.0f}",
                f"{t.tokens_max:,}",
                f"{t.micro_batches:g}",
                "+".join(["encoder", *(["decoder"] * t.decodes), *(["MAP"] * t.embeds)]),
                _flops(t.flops),
            )
            for s in plan.stages
            for t in s.tasks
        ],
    )
    click.echo(f"\nmemory per rank (GB) at {plan.nproc} rank(s)")
    header = ("item", *(f"{s.name} {k}" for s in plan.stages for k in ("DDP", "FSDP2")))
    rows = [
        (label, *(_gb(getattr(m, key)) for s in plan.stages for m in (s.ddp, s.fsdp)))
        for label, key in _MEMORY_ROWS
    ]
    rows.append(("total", *(_gb(m.total) for s in plan.stages for m in (s.ddp, s.fsdp))))
    table(header, rows)
    if plan.notes:
        click.echo("\nnotes")
        for note in plan.notes:
            click.echo(f"- {note}")


def print_plan(
    run_file: str, *, nproc: int, device: str | None = None, dotted: Sequence[str] = ()
) -> None:
    """Load ``run_file`` (``device``: the ``train`` command's ``--device``; ``dotted``: its
    ``KEY=VALUE`` overrides), plan it for ``nproc`` ranks and print it; errors are
    :class:`~atoken.core.errors.AtokenError`."""
    from atoken.engine.runconfig import load_run_file

    overrides = {"train": {"device": device}} if device else {}
    cfg = load_run_file(run_file, dotted=dotted, **overrides)
    echo_plan(plan_run(cfg, nproc=nproc), source=str(Path(run_file)))
