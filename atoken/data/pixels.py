"""Images from what users hand over: PIL images, numpy arrays, tensors and files, as float32
``[3, H, W]`` in [0, 1] (the canonical form of the image family; the video family's frames and
the data sources use it too).

Conversion rules (docs/concepts/latent.md): torch tensors are channels-first ([3, H, W],
[1, H, W], [4, H, W] or [H, W]); numpy arrays and PIL images are channels-last ([H, W],
[H, W, 1|3|4]); a ``str`` or ``os.PathLike`` is opened with PIL (header first, so a huge file
is refused before it is decoded). uint8 values are divided by 255; float values must lie in
[0, 1]; grayscale is repeated to RGB; RGBA is alpha-premultiplied onto black.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from atoken.core.errors import ModalityInputError

__all__ = ["image_size", "to_image_tensor"]


def _from_pil(image: Any) -> torch.Tensor:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    array = np.asarray(image)  # [H, W] or [H, W, C] uint8
    return _from_numpy(array)


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 3:
        array = np.moveaxis(array, -1, 0)  # [C, H, W]
    # contiguous and writable (np.asarray of a PIL image is read-only): copied only if needed
    return _from_tensor(torch.from_numpy(np.require(array, requirements=["C", "W"])))


@contextlib.contextmanager
def _opened(path: str | os.PathLike) -> Iterator[Any]:
    """A PIL image of ``path`` with only its header read, and typed errors (a decompression
    bomb Pillow refuses is a ``ModalityInputError``, like any unreadable file)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # sizes checked here
            image = Image.open(path)
    except FileNotFoundError as exc:
        raise ModalityInputError(f"image: no such file {os.fspath(path)!r}") from exc
    except Image.DecompressionBombError as exc:
        raise ModalityInputError(f"image: {os.fspath(path)!r} is refused: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ModalityInputError(
            f"image: {os.fspath(path)!r} is not a readable image ({type(exc).__name__}: {exc})"
        ) from exc
    with image:
        yield image


def _from_path(path: str | os.PathLike) -> torch.Tensor:
    with _opened(path) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ModalityInputError(
                f"image: {os.fspath(path)!r} is not a readable image ({type(exc).__name__}: {exc})"
            ) from exc
        return _from_pil(image)


def image_size(sample: Any) -> tuple[int, int] | None:
    """``(H, W)`` of an image sample without decoding it: a tensor's or array's shape, a PIL
    image's size, a file's header. None for a type :func:`to_image_tensor` does not take.

    Raises:
        ModalityInputError: a file that is missing or has no readable header.
    """
    if isinstance(sample, torch.Tensor):
        return tuple(sample.shape[-2:]) if sample.ndim in (2, 3) else None  # [C, H, W]
    if isinstance(sample, np.ndarray):
        return tuple(sample.shape[:2]) if sample.ndim in (2, 3) else None  # [H, W, C]
    if isinstance(sample, (str, os.PathLike)):
        with _opened(sample) as image:
            return image.size[1], image.size[0]
    if type(sample).__module__.startswith("PIL."):
        return sample.size[1], sample.size[0]
    return None


def _from_tensor(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 2:
        x = x[None]  # [1, H, W]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ModalityInputError(
            f"image: expected [3, H, W], [1, H, W], [4, H, W] or [H, W], got {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
        # A sum is NaN/inf when any value is (no clip-sized temporaries, unlike isfinite);
        # the exact check runs only then.
        if not math.isfinite(float(x.sum())) and not bool(torch.isfinite(x).all()):
            raise ModalityInputError("image: contains NaN or infinite values")
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise ModalityInputError(
                f"image: float values must lie in [0, 1], got [{float(x.min()):.3g}, "
                f"{float(x.max()):.3g}]; pass uint8 for 0..255 data"
            )
    else:
        raise ModalityInputError(f"image: dtype must be uint8 or float, got {x.dtype}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)  # grayscale -> RGB
    elif x.shape[0] == 4:
        x = x[:3] * x[3:4]  # premultiply onto black
    return x.contiguous()


def to_image_tensor(sample: Any, *, min_side: int = 2) -> torch.Tensor:
    """Convert a PIL image, numpy array, tensor or path to float32 ``[3, H, W]`` in [0, 1].

    Raises:
        ModalityInputError: for an unsupported type, shape, dtype or value range, a NaN, an
            unreadable file or a side shorter than ``min_side`` pixels.
    """
    if isinstance(sample, torch.Tensor):
        x = _from_tensor(sample.detach().cpu())
    elif isinstance(sample, np.ndarray):
        x = _from_numpy(sample)
    elif isinstance(sample, (str, os.PathLike)):
        x = _from_path(sample)
    elif type(sample).__module__.startswith("PIL."):
        x = _from_pil(sample)
    else:
        raise ModalityInputError(
            f"image: unsupported sample type {type(sample).__name__}; "
            "pass a PIL image, a numpy array, a tensor or a file path"
        )
    H, W = x.shape[-2:]
    if min(H, W) < min_side:
        raise ModalityInputError(
            f"image: size {H}x{W} is too small; each side needs at least {min_side} pixels"
        )
    return x
