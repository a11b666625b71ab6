"""``atoken encode`` (click): samples of a data source into a latent store, with FSQ ids.

Registered onto :func:`atoken.cli.main`; ``--ids`` insists on a discrete tokenizer and
records the codebook size of each id group in the samples' meta (what
:meth:`atoken.data.latent_store.LatentStore.tokens` reports back). Heavy imports stay inside.
"""

from __future__ import annotations

from typing import Any

import click

from atoken.cli.common import (
    fail,
    load_tokenizer,
    parse_storage_options,
    storage_option,
    wait_option,
)
from atoken.core.errors import AtokenError

__all__ = ["encode", "encode_to_store"]


def _data_source(
    data_arg: str, storage_options: dict[str, Any], modality: str | None = None, model: Any = None
) -> tuple[Any, tuple[str, ...], str]:
    """``(float samples sequence, names, modality)`` for a store URL, a store in a modality's
    own format (``Modality.open_store``: a mesh store's records), a folder or 'photos'.

    A store's samples are of its own modality (``--modality`` must agree);
    folders and 'photos' hold images, unless ``modality`` names one of ``model``'s whose
    samples are not pictures: a folder then holds its sample files
    (:class:`atoken.data.modality_files.ModalityFiles`).

    Raises:
        DataModalityError: ``modality`` is not the store's (or not an image modality for a
            folder of image files).
    """
    from atoken.core.errors import DataModalityError
    from atoken.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, ImageFolder, PhotoSet
    from atoken.data.zarr_dataset import ZarrSamples, is_store_url

    store = _own_format_store(data_arg)
    if store is not None or is_store_url(data_arg):
        if store is None:  # a media store (an empty store of a family's own is still one)
            store = ZarrSamples(data_arg, storage_options)
        if modality and modality != store.modality:
            raise DataModalityError(
                f"{data_arg!r} holds {store.modality!r} samples, not {modality!r} (leave out "
                "--modality to encode them as the store says)"
            )
        return store, store.names, store.modality
    if modality and model is not None and model.modality(modality).sample_kind != "picture":
        from atoken.data.modality_files import ModalityFiles

        files = ModalityFiles(data_arg, model.modality(modality))
        return files, files.names, modality
    images = (
        PhotoSet(TRAIN_PHOTOS + HELDOUT_PHOTOS) if data_arg == "photos" else ImageFolder(data_arg)
    )
    if modality and modality != "image":
        raise DataModalityError(
            f"{data_arg!r} holds image files; --modality {modality!r} needs a media store of "
            "that modality (atoken data import-..., or MediaWriter)"
        )
    return _Scaled(images), images.names, "image"


def _own_format_store(path: str) -> Any:
    """The samples of a store in a registered modality's own format at ``path`` (its
    ``open_store``; the mesh family's store), or None."""
    from atoken.core.modality import Modality
    from atoken.plugins.manager import get_registry

    registry = get_registry().modalities
    for name in registry.names():
        factory = registry.get(name)
        if isinstance(factory, type) and issubclass(factory, Modality):
            store = factory.open_store(path)
            if store is not None:
                return store
    return None


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
    ids: bool = False,
) -> int:
    """Encode ``images`` (float samples of ``modality``) in batches and append their latents
    (and FSQ ids) to the latent store ``out``; each sample's meta gets its ``source`` name
    (and, with ids, the ``codebook_sizes`` of the id groups). ``ids``: the tokenizer must
    be discrete (the store is for a language model's tokens).

    Resumes a store whose committed samples are the first of ``names``; returns its count.
    ``overwrite`` replaces a latent store when the whole encode succeeds (never anything
    else, and never a path that is or contains one of ``sources``).

    Raises:
        StoreError: ``out`` holds other samples (use ``overwrite``), or anything but a
            latent store (user files, another kind of store), or is a source.
        ConfigError: ``ids`` with a continuous tokenizer.
    """
    import torch
    from tqdm.auto import tqdm

    from atoken.core.errors import ConfigError, StoreError
    from atoken.data.latent_writer import LatentWriter

    discrete = hasattr(model.bottleneck, "ids_to_codes")
    if ids and not discrete:
        raise ConfigError(
            f"--ids needs a discrete tokenizer (bottleneck {model.config.bottleneck!r} is "
            "continuous); convert So/D with --fsq or train an fsq stage"
        )
    sizes = {"codebook_sizes": list(model.bottleneck.codebook_sizes)} if discrete else {}
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
                latent, codes = model.encode_with_ids(batch, modality)  # one encoder pass
                meta = [{**m, "source": names[lo + k], **sizes} for k, m in enumerate(latent.meta)]
                latent = latent.replace(meta=meta).to("cpu")
                writer.add(latent, codes.cpu() if discrete and codes is not None else None)
                bar.update(len(batch))
    return writer.committed


@click.command()
@click.option("--checkpoint", required=True, help="A saved tokenizer or a run folder.")
@click.argument("data_arg", metavar="DATA")
@click.argument("out")
@click.option("--dtype", type=click.Choice(["float16", "float32", "bfloat16"]), default="float16")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@storage_option
@click.option("--overwrite", is_flag=True, help="Replace OUT instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@wait_option
@click.option(
    "--modality",
    default=None,
    help="The samples' modality [default: the store's; image for a folder or 'photos']; with "
    "a folder, the folder's files of that modality (read with its load hook).",
)
@click.option(
    "--ids",
    "want_ids",
    is_flag=True,
    help="Store discrete ids [N, G] for a language model (an FSQ tokenizer; fails otherwise).",
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
    want_ids: bool,
) -> None:
    """Encode DATA (a media store URL of any modality, a mesh store, an image folder,
    'photos', or with --modality a folder of that modality's sample files, e.g. .npy) into the
    latent store OUT: SparseLatents, and for FSQ tokenizers their ids."""
    options = parse_storage_options(storage_options)
    try:
        model = load_tokenizer(checkpoint)
        samples, names, kind = _data_source(data_arg, options, modality, model)
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
            ids=want_ids,
        )
    except AtokenError as exc:
        raise fail(exc) from exc
    extra = ""
    if want_ids:
        sizes = model.bottleneck.codebook_sizes
        extra = f", ids [N, {len(sizes)}] with codebook sizes {list(sizes)}"
    click.echo(f"encoded {count} samples ({kind}) into {out}{extra}")
