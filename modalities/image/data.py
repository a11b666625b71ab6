"""The image family's data sources: ``photos`` (the bundled real photos) and ``image_folder``
(every image file under a folder), their crops sampled by
:class:`~atoken.data.builtin_sources.CropSource`.

Shapes: a stored image uint8 ``[3, H, W]``; a training crop float32 ``[3, h, w]`` in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import torch

from atoken.core.errors import ConfigError
from atoken.data.builtin_sources import CropSource
from atoken.data.captions import folder_captions
from atoken.data.images import HELDOUT_PHOTOS, TRAIN_PHOTOS, ImageFolder, PhotoSet
from atoken.data.indexed_source import example_images
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
    """``image_folder``: every image file under ``path`` (recursively, sorted).

    Captioned (for ``text_alignment``) with ``caption_key = "txt"`` (a sidecar ``.txt`` beside
    each image) or ``caption_file`` (a ``.csv`` with ``file`` and ``caption`` columns or a
    ``.json`` object, relative to ``path``; :func:`atoken.data.captions.folder_captions`):
    each crop is then aligned with its own image's caption, and the held-out images are scored
    against the held-out captions (a :class:`~atoken.data.sources.CaptionedSource`).
    """

    path: str = attrs.field(default="")
    caption_key: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    caption_file: str = attrs.field(default="", validator=attrs.validators.instance_of(str))

    @staticmethod
    def example_data(folder: str | os.PathLike) -> dict[str, Any]:
        """The ``data`` table of a small real source for contract tests: four bundled photos
        (96 px JPEGs) in a folder under ``folder``."""
        root = Path(folder) / "example_image_folder"
        if not root.is_dir():
            root.mkdir(parents=True)
            for name, data in example_images():
                (root / f"{name}.jpg").write_bytes(data)
        return {"source": "image_folder", "path": str(root), "crop_min": 32, "crop_max": 64}

    def __attrs_post_init__(self) -> None:
        if not self.path:
            raise ConfigError("image_folder needs path = a folder of image files")
        folder = ImageFolder(self.path)
        train, held = split_heldout(folder.names, self.heldout_choice, self.path)
        self.sample_from(IndexView(folder, train))
        self.heldout_names = tuple(folder.names[i] for i in held)
        self.heldout = [to_float(folder[i]) for i in held]
        texts = folder_captions(
            self.path, folder.names, caption_key=self.caption_key, caption_file=self.caption_file
        )
        if texts is not None:  # a CaptionedSource: its held-out captions, each image its own
            self.texts, self.train_indices = texts, train
            self.captions = tuple(texts[i] for i in held)  # [K]
            self.heldout_labels = torch.arange(len(held))  # [K]

    def labelled_batch(
        self, step: int, micro: int = 0
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
        """``(crops, labels [B], texts [B])`` of ``(step, micro)``: the crops of
        :meth:`batch`, the index of each one's image (into the folder's sorted files) and
        that image's caption.

        Raises:
            ConfigError: the source has no captions (no ``caption_key`` or ``caption_file``).
        """
        if not hasattr(self, "texts"):
            raise ConfigError(
                "image_folder has no captions: set caption_key = 'txt' (sidecar .txt files) "
                "or caption_file = 'captions.csv'"
            )
        crops, picked = self.sampler.indexed_batch(step, micro)
        index = [self.train_indices[i] for i in picked]
        return crops, torch.tensor(index, dtype=torch.long), [self.texts[i] for i in index]


@hookimpl
def register_data_sources(register) -> None:
    """The image family's sources: ``photos`` and ``image_folder``."""
    register("photos", Photos)
    register("image_folder", ImageFolderSource)
