"""Image inputs of the losses and metrics: a batch tensor or a list of differently sized images.

Shapes: B images; a batch is ``[B, 3, H, W]`` or a list of ``[3, H_i, W_i]`` tensors, float,
nominally in [0, 1] (values are not clamped: a decoder's raw output may overshoot slightly).
Perceptual terms see every image resized to ``S x S`` (224 by default, bilinear with
antialiasing) and batched to ``[B, 3, S, S]``; pixel terms use the native resolution.

Public: the built-in losses and metrics take their images through it, and so may a plugin's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from atoken.core.errors import ConfigError, ModalityInputError

__all__ = ["ImageBatch", "check_size", "image_list", "image_pairs", "pair_up", "resized_batch"]

#: A batch ``[B, 3, H, W]`` or a list of ``[3, H_i, W_i]`` images.
ImageBatch = torch.Tensor | Sequence[torch.Tensor]


def _check_image(x: object, where: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ModalityInputError(f"{where}: expected a tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[0] != 3 or x.shape[1] < 1 or x.shape[2] < 1:
        raise ModalityInputError(f"{where}: expected an image [3, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ModalityInputError(f"{where}: expected float values in [0, 1], got {x.dtype}")
    return x


def image_list(images: ImageBatch, *, who: str, what: str = "images") -> list[torch.Tensor]:
    """The images of a batch as a list of ``[3, H_i, W_i]`` tensors (views, no copy).

    Raises:
        ModalityInputError: not a ``[B, 3, H, W]`` float tensor or a list of ``[3, H, W]`` ones,
            or an empty batch.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ModalityInputError(
                f"{who}: {what} must be [B, 3, H, W] or a list of [3, H, W], "
                f"got a tensor of shape {tuple(images.shape)}"
            )
        out = list(images.unbind(0))
    elif isinstance(images, Sequence) and not isinstance(images, str):
        out = list(images)
    else:
        raise ModalityInputError(
            f"{who}: {what} must be a tensor or a list of tensors, got {type(images).__name__}"
        )
    if not out:
        raise ModalityInputError(f"{who}: {what} is an empty batch")
    return [_check_image(x, f"{who}: {what}[{i}]") for i, x in enumerate(out)]


def image_pairs(
    prediction: ImageBatch, target: ImageBatch, *, who: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Prediction and target image lists of equal length with matching sizes.

    Raises:
        ModalityInputError: a malformed batch, different lengths or a size mismatch.
    """
    preds = image_list(prediction, who=who, what="prediction")
    return pair_up(preds, image_list(target, who=who, what="target"), who=who)


def pair_up(
    preds: list[torch.Tensor], targets: list[torch.Tensor], *, who: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(preds, targets)`` once they pair up: equal lengths, each pair of one shape.

    Raises:
        ModalityInputError: different lengths or a shape mismatch (the index is named).
    """
    if len(preds) != len(targets):
        raise ModalityInputError(
            f"{who}: {len(preds)} predictions but {len(targets)} targets; they must pair up"
        )
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        if p.shape != t.shape:
            raise ModalityInputError(
                f"{who}: prediction[{i}] is {tuple(p.shape)} but target[{i}] is {tuple(t.shape)}"
            )
    return preds, targets


def check_size(size: int | Sequence[int] | None, *, who: str) -> tuple[int, int] | None:
    """Normalise a resize parameter to ``(height, width)`` (``None`` stays ``None``).

    Raises:
        ConfigError: not a positive int or a pair of them.
    """
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ConfigError(f"{who}: size must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def resized_batch(
    images: ImageBatch,
    size: tuple[int, int] | None,
    *,
    who: str,
    antialias: bool = True,
    what: str = "images",
) -> torch.Tensor:
    """Every image resized to ``size`` (bilinear) and stacked: ``[B, 3, S_h, S_w]``.

    An image already at ``size`` is not resampled. With ``size=None`` all images must share
    one size and are only stacked.

    Raises:
        ModalityInputError: a malformed batch, or differently sized images with ``size=None``.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        image_list(images, who=who, what=what)  # validates
        if size is None or tuple(images.shape[-2:]) == size:
            return images
        return F.interpolate(images, size=size, mode="bilinear", antialias=antialias)
    items = image_list(images, who=who, what=what)
    if size is None:
        sizes = {tuple(x.shape[-2:]) for x in items}
        if len(sizes) > 1:
            raise ModalityInputError(
                f"{who}: {what} have different sizes {sorted(sizes)}; set a resize size"
            )
        return torch.stack(items)  # [B, 3, H, W]
    out = [
        x
        if tuple(x.shape[-2:]) == size
        else F.interpolate(x[None], size=size, mode="bilinear", antialias=antialias)[0]
        for x in items
    ]
    return torch.stack(out)  # [B, 3, S_h, S_w]
