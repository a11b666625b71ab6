"""Datasets: the embedded real photos, image folders, the deterministic crop and clip sampler
(:class:`WindowSampler`), media stores in zarr over fsspec (import, verify,
:class:`ZarrDataset`, :class:`ZarrSamples`), and the data-source protocol of training
(:class:`DataSource`, :class:`SourceContext`, :func:`build_source`), and latent stores
(:func:`write_latents`, :func:`read_latents`, :class:`LatentStore`)."""

from atoken.core.errors import (
    StoreError,
    StoreIntegrityError,
    StoreLockedError,
    StoreSchemaError,
)
from atoken.data.images import (
    HELDOUT_PHOTOS,
    TRAIN_PHOTOS,
    CropSampler,
    ImageFolder,
    PhotoSet,
    load_photo,
)
from atoken.data.importer import ImportReport, import_images
from atoken.data.latent_store import LatentStore, read_latents
from atoken.data.latent_writer import write_latents
from atoken.data.media_writer import MediaWriter, StoreLayout
from atoken.data.sampling import WindowSampler
from atoken.data.sources import (
    CaptionedSource,
    DataSource,
    SourceContext,
    build_source,
    current_context,
)
from atoken.data.store import MediaStore
from atoken.data.verify import VerifyReport, verify_store
from atoken.data.zarr_dataset import ZarrDataset, ZarrImages, ZarrSamples, collate_list

__all__ = [
    "HELDOUT_PHOTOS",
    "TRAIN_PHOTOS",
    "CaptionedSource",
    "CropSampler",
    "DataSource",
    "ImageFolder",
    "ImportReport",
    "LatentStore",
    "MediaStore",
    "MediaWriter",
    "PhotoSet",
    "SourceContext",
    "StoreError",
    "StoreIntegrityError",
    "StoreLayout",
    "StoreLockedError",
    "StoreSchemaError",
    "VerifyReport",
    "WindowSampler",
    "ZarrDataset",
    "ZarrImages",
    "ZarrSamples",
    "build_source",
    "collate_list",
    "current_context",
    "import_images",
    "load_photo",
    "read_latents",
    "verify_store",
    "write_latents",
]
