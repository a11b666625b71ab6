"""The image family's data sources: ``photos`` (the bundled real photos) and ``image_folder``
(every image file under a folder), their crops sampled by
:class:`~atoken.data.builtin_sources.CropSource`.

Shapes: a stored image uint8 ``[3, H, W]``; a training crop float32 ``[3, h, w]`` in [0, 1].
"""

from __future__ import annotations

import attrs

from atoken.core.errors import ConfigError
from atoken.data.builtin_sources import CropSource
from atoken.data.images import HELDOUT_PHOTOS, TRAIN_PHOTOS, ImageFolder, PhotoSet
from atoken.data.sampling import to_float
from atoken.data.sources import IndexView, split_heldout
from atoken.plugins.hookspecs import hookimpl

__all__ = ["ImageFolderSource", "Photos", "register_data_sources"]


@attrs.define(kw_only=True, slots=False)
class Photos(CropSource):
    """``photos``: the bundled real photos; ``heldout`` defaults to astronaut, coffee, flower."""

    def __attrs_post_init__(self) -> None:
        held = self.heldout_choice or HELDOUT_PHOTOS
        self.sample_from(PhotoSet([n for n in TRAIN_PHOTOS if n not in held]))
        photos = PhotoSet(held)
        self.heldout_names = photos.names
        self.heldout = [to_float(photos[i]) for i in range(len(photos))]


@attrs.define(kw_only=True, slots=False)
class ImageFolderSource(CropSource):
    """``image_folder``: every image file under ``path`` (recursively, sorted)."""

    path: str = attrs.field(default="")

    def __attrs_post_init__(self) -> None:
        if not self.path:
            raise ConfigError("image_folder needs path = a folder of image files")
        folder = ImageFolder(self.path)
        train, held = split_heldout(folder.names, self.heldout_choice, self.path)
        self.sample_from(IndexView(folder, train))
        self.heldout_names = tuple(folder.names[i] for i in held)
        self.heldout = [to_float(folder[i]) for i in held]


@hookimpl
def register_data_sources(register) -> None:
    """The image family's sources: ``photos`` and ``image_folder``."""
    register("photos", Photos)
    register("image_folder", ImageFolderSource)
