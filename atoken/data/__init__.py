"""Datasets: the embedded real photos, image folders, and the deterministic crop sampler."""

from atoken.data.images import (
    HELDOUT_PHOTOS,
    TRAIN_PHOTOS,
    CropSampler,
    ImageFolder,
    PhotoSet,
    load_photo,
)

__all__ = [
    "HELDOUT_PHOTOS",
    "TRAIN_PHOTOS",
    "CropSampler",
    "ImageFolder",
    "PhotoSet",
    "load_photo",
]
