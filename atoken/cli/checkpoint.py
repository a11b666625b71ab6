"""``atoken checkpoint``: training checkpoints of a run folder.

    atoken checkpoint upgrade --trust CHECKPOINT_FOLDER

``upgrade`` rewrites the pickled index (``.metadata``) of a sharded checkpoint written by
stock ``torch.distributed.checkpoint`` or atoken < 0.5 as the JSON index atoken reads
(:mod:`atoken.engine.dcp_format`). Reading the old index unpickles it, which can run code: the
command refuses to run without ``--trust``, the user's word that the folder's origin is known.
"""

from __future__ import annotations

from pathlib import Path

import click

from atoken.cli.common import fail
from atoken.core.errors import AtokenError

__all__ = ["checkpoint"]


@click.group()
def checkpoint() -> None:
    """Training checkpoints of a run folder."""


@checkpoint.command("upgrade")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--trust",
    is_flag=True,
    help="Required: you trust the folder's origin (its old index is unpickled, which can run "
    "code).",
)
def upgrade(folder: str, trust: bool) -> None:
    """Rewrite a trusted sharded checkpoint's pickled index as JSON (FOLDER: step_N/)."""
    from atoken.engine.dcp_format import upgrade as upgrade_index

    if not trust:
        raise click.UsageError(
            "reading the old index unpickles it, which can run code: pass --trust if you know "
            "where this checkpoint came from"
        )
    try:
        path = upgrade_index(Path(folder))
    except AtokenError as exc:
        raise fail(exc) from exc
    click.echo(f"rewrote {path} as JSON; the checkpoint now loads with atoken train --resume")
