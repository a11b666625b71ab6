"""Image data: real photos shipped by scikit-image and scikit-learn, folders of files, crops.

Shapes: every image is uint8 ``[3, H, W]`` in storage and float32 ``[3, h, w]`` in [0, 1] once
cropped. A batch is a list of images of different sizes (the tokenizer packs them).

The embedded set needs no download: scikit-image bundles its photos and scikit-learn its two
sample images. Evaluation photos are held out by name and never trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from atoken.core.errors import ConfigError
from atoken.data.pixels import to_image_tensor
from atoken.data.sampling import WindowSampler

__all__ = ["HELDOUT_PHOTOS", "TRAIN_PHOTOS", "CropSampler", "ImageFolder", "PhotoSet", "load_photo"]

#: Photos trained on (scikit-image names; ``china`` is scikit-learn's).
TRAIN_PHOTOS: tuple[str, ...] = (
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "page",
    "clock",
    "text",
    "china",
)
#: Whole photos held out for evaluation (``flower`` is scikit-learn's).
HELDOUT_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "flower")

_SKLEARN = {"china": "china.jpg", "flower": "flower.jpg"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def load_photo(name: str) -> torch.Tensor:
    """A bundled photo as uint8 ``[3, H, W]`` (grayscale repeated, alpha premultiplied)."""
    if name in _SKLEARN:
        from sklearn.datasets import load_sample_image

        array = load_sample_image(_SKLEARN[name])
    else:
        import skimage.data

        loader = getattr(skimage.data, name, None)
        if loader is None or name.startswith("_"):
            known = ", ".join(TRAIN_PHOTOS + HELDOUT_PHOTOS)
            raise ConfigError(f"unknown photo {name!r}; bundled photos include {known}")
        array = np.asarray(loader())
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
    return _to_uint8(to_image_tensor(array))


class PhotoSet:
    """Bundled photos by name, decoded once and kept as uint8."""

    def __init__(self, names: Sequence[str]) -> None:
        if not names:
            raise ConfigError("a photo set needs at least one name")
        self.names = tuple(names)
        self._images = [load_photo(n) for n in self.names]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self._images[index]


class ImageFolder:
    """Every image file under ``root`` (recursively, sorted), decoded on access.

    Raises:
        ConfigError: the folder does not exist or holds no image file.
    """

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"image folder {str(self.root)!r} does not exist")
        exts = tuple(e.lower() for e in extensions)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in exts)
        if not self.files:
            raise ConfigError(f"no image files ({', '.join(exts)}) under {str(self.root)!r}")
        self.names = tuple(str(p.relative_to(self.root)) for p in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return _to_uint8(to_image_tensor(self.files[index]))


class CropSampler(WindowSampler):
    """Deterministic random crops of images (:class:`~atoken.data.sampling.WindowSampler`
    with no time window): the batch of (step, micro) depends on nothing else.

    Each crop has a height and a width drawn independently from ``[crop_min, crop_max]``
    (capped by the image), at native scale and aspect (no resizing); ``batch`` returns float
    crops ``[3, h, w]`` in [0, 1].
    """

    def __init__(
        self,
        source: Sequence[torch.Tensor],
        *,
        batch_size: int,
        crop_min: int,
        crop_max: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(
            source,
            batch_size=batch_size,
            crop_min=crop_min,
            crop_max=crop_max,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.source = source
