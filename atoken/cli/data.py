"""``atoken data import images`` and ``data verify`` (click); ``import images --format wds``
writes WebDataset shards instead of a store.

Registered onto :func:`atoken.cli.main`. Each family adds its own importer under
``data import`` through the ``register_commands`` hook, from its package's ``cli`` module.
Heavy imports (zarr, torch models) stay inside the commands so ``atoken --help`` stays fast.
"""

from __future__ import annotations

import click

from atoken.cli.common import (
    echo_import,
    fail,
    parse_storage_options,
    storage_option,
    wait_option,
)
from atoken.core.errors import AtokenError

__all__ = ["data"]


@click.group()
def data() -> None:
    """Datasets in zarr stores on any fsspec filesystem: import and verify."""


@data.group(name="import")
def import_() -> None:
    """Import raw media into a zarr store (created, or resumed when it exists)."""


@import_.command(name="images")
@click.argument("paths", nargs=-1, required=True)
@storage_option
@click.option(
    "--src-storage-options",
    default=None,
    help="fsspec options (JSON) for the sources (default: --storage-options when the "
    "sources use the destination's protocol).",
)
@click.option("--captions", default=None, help="'sidecar' (x.txt beside x.jpg) or a JSON file.")
@click.option("--labels", default=None, help="'folder' (parent folder name) or a JSON file.")
@click.option("--chunk-kib", default=256, show_default=True, help="Chunk size in KiB.")
@click.option("--shard-chunks", default=64, show_default=True, help="Chunks per shard object.")
@click.option("--compression", type=click.Choice(["zstd", "none"]), default="zstd")
@click.option("--workers", default=2, show_default=True, help="Decoding threads.")
@click.option("--skip-bad", is_flag=True, help="Report unreadable files instead of failing.")
@click.option(
    "--max-pixels",
    default=None,
    type=click.IntRange(1),
    help="Refuse images with more pixels (read from the header) [default: Pillow's limit].",
)
@click.option("--overwrite", is_flag=True, help="Replace the store instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["zarr", "wds"]),
    default="zarr",
    show_default=True,
    help="zarr: a media store; wds: WebDataset tar shards in the folder DST (each file's own "
    "bytes, a caption x.txt beside x.jpg as the txt key).",
)
@click.option(
    "--shard-samples",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="--format wds: samples per shard at most.",
)
@click.option(
    "--shard-size",
    default=1024.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="--format wds: MiB per shard at most.",
)
@click.option("--prefix", default="shard", show_default=True, help="--format wds: shard names.")
@wait_option
def import_images_command(
    paths: tuple[str, ...],
    storage_options: str | None,
    src_storage_options: str | None,
    captions: str | None,
    labels: str | None,
    chunk_kib: int,
    shard_chunks: int,
    compression: str,
    workers: int,
    skip_bad: bool,
    max_pixels: int | None,
    overwrite: bool,
    no_progress: bool,
    fmt: str,
    shard_samples: int,
    shard_size: float,
    prefix: str,
    wait: float,
) -> None:
    """Import images from SRC... (folders, globs, files or fsspec URLs) into the store DST,
    or (``--format wds``, local SRC and DST) into WebDataset shards in the folder DST."""
    import fsspec

    from atoken.data.importer import import_images, load_mapping
    from atoken.data.media_writer import StoreLayout

    if len(paths) < 2:
        raise click.UsageError("give at least one SRC and the DST store")
    *srcs, dst = paths
    if fmt == "wds":
        _import_shards(srcs, dst, shard_samples, shard_size, prefix, skip_bad, not no_progress)
        return
    dst_options = parse_storage_options(storage_options)
    if src_storage_options is not None:
        src_options = parse_storage_options(src_storage_options)
    else:
        same = {fsspec.utils.get_protocol(s) for s in srcs} == {fsspec.utils.get_protocol(dst)}
        src_options = dst_options if same else {}
    try:
        report = import_images(
            srcs,
            dst,
            storage_options=dst_options,
            src_storage_options=src_options,
            layout=StoreLayout(
                chunk_bytes=chunk_kib * 1024, shard_chunks=shard_chunks, compression=compression
            ),
            captions=load_mapping(captions) if captions not in (None, "sidecar") else captions,
            labels=load_mapping(labels) if labels not in (None, "folder") else labels,
            skip_bad=skip_bad,
            workers=workers,
            max_pixels=max_pixels,
            overwrite=overwrite,
            progress=not no_progress,
            lock_timeout=wait,
        )
    except AtokenError as exc:
        raise fail(exc) from exc
    echo_import(report, "images", dst)


def _import_shards(
    srcs: list[str],
    dst: str,
    shard_samples: int,
    shard_mib: float,
    prefix: str,
    skip_bad: bool,
    progress: bool,
) -> None:
    from atoken.data.wds_writer import write_image_shards

    try:
        report = write_image_shards(
            srcs,
            dst,
            prefix=prefix,
            shard_samples=shard_samples,
            shard_bytes=max(1, int(shard_mib * 2**20)),
            skip_bad=skip_bad,
            progress=progress,
        )
    except AtokenError as exc:
        raise fail(exc) from exc
    click.echo(f"wrote {report.samples} images into {len(report.shards)} shards in {dst}")
    for name, reason in report.skipped:
        click.echo(f"skipped {name}: {reason}")
    click.echo(f'train on them with: data = {{ source = "webdataset", urls = "{report.urls}" }}')


@data.command()
@click.argument("url")
@storage_option
@click.option("--skip-bad", is_flag=True, help="Check every sample and list the bad ones.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def verify(url: str, storage_options: str | None, skip_bad: bool, no_progress: bool) -> None:
    """Check the schema, the index and every sample's checksum of the store URL.

    Exits with status 1 when a sample is bad (with --skip-bad, after listing all of them).
    """
    from atoken.data.verify import verify_store

    try:
        report = verify_store(
            url, parse_storage_options(storage_options), skip_bad=skip_bad, progress=not no_progress
        )
    except AtokenError as exc:
        raise fail(exc) from exc
    for index, name, message in report.bad:
        click.echo(f"skipped sample {index} ({name}): {message}")
    good = report.samples - len(report.bad)
    click.echo(f"{url}: {good} of {report.samples} samples OK ({report.bytes_checked} bytes)")
    if report.bad:
        raise SystemExit(1)
