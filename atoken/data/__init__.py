"""Datasets: the embedded real photos, image folders, the deterministic crop sampler, and
media stores in zarr over fsspec (import, verify, :class:`ZarrDataset`)."""

from atoken.core.errors import StoreError, StoreIntegrityError, StoreSchemaError
from atoken.data.images import (
    HELDOUT_PHOTOS,
    TRAIN_PHOTOS,
    CropSampler,
    ImageFolder,
    PhotoSet,
    load_photo,
)
from atoken.data.importer import ImportReport, import_images
from atoken.data.store import MediaStore, MediaWriter, StoreLayout
from atoken.data.verify import VerifyReport, verify_store
from atoken.data.zarr_dataset import ZarrDataset, ZarrImages, collate_list

__all__ = [
    "HELDOUT_PHOTOS",
    "TRAIN_PHOTOS",
    "CropSampler",
    "ImageFolder",
    "ImportReport",
    "MediaStore",
    "MediaWriter",
    "PhotoSet",
    "StoreError",
    "StoreIntegrityError",
    "StoreLayout",
    "StoreSchemaError",
    "VerifyReport",
    "ZarrDataset",
    "ZarrImages",
    "collate_list",
    "import_images",
    "load_photo",
    "verify_store",
]
