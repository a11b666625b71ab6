"""The built-in ``image`` modality: native-resolution images as 4D tokens with t = z = 0.

Shapes:
    image  float32 [3, H, W] in [0, 1] (the canonical form every input is converted to)
    values float32 [n, pt * p * p * 3], laid out as (pt, ph, pw, c); the image fills temporal
           slot 0 and slots 1..pt-1 are zero, so images and video share one patch embedding
    coords int32 [n, 4] = (0, x, y, 0) with x the patch column and y the patch row

Input conversion rules (documented in docs/concepts/latent.md):
    * torch tensors are channels-first: [3, H, W], [1, H, W], [4, H, W] or [H, W];
      numpy arrays and PIL images are channels-last ([H, W], [H, W, 1|3|4]);
      a ``str`` or ``os.PathLike`` is opened with PIL.
    * uint8 values are divided by 255; float values must already lie in [0, 1].
    * grayscale (one channel) is repeated to RGB; RGBA is alpha-premultiplied onto black
      (``rgb * alpha``), the convention of the 3D pipeline.
    * H and W must be at least ``min_side`` (2) pixels. Sizes that are not a multiple of the
      patch are padded at the bottom/right by edge replication and cropped back on decode.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from atoken.core.coords import raster_coords, scatter_to_grid
from atoken.core.errors import ModalityInputError, TooManyTokensError
from atoken.core.modality import Modality, check_decode_grid, check_positive_ints, rgb_stats
from atoken.data.images import IMAGE_EXTENSIONS
from atoken.data.pixels import image_size, to_image_tensor
from atoken.plugins.hookspecs import hookimpl

__all__ = ["ImageModality", "image_size", "rgb_stats", "to_image_tensor"]


class ImageModality(Modality):
    """Images at native resolution and aspect ratio.

    Args:
        patch_size: spatial patch p (16).
        temporal_patch: temporal patch pt (4); the image occupies slot 0.
        max_tokens: refuse (``TooManyTokensError``) an image with more tokens than this.
        min_side: the smallest accepted height or width in pixels.
        input_mean, input_std: the per-channel (RGB) normalisation of the [0, 1] pixels the
            model reads (the tokenizer passes its config's; SigLIP2: 0.5, 0.5).

    Only temporal slot 0 is content (``content_dim = p * p * 3``): the model neither
    normalises nor predicts the zero slots 1..pt-1.
    """

    name = "image"
    layout = "thw"
    shared_pixel_path = True  # RGB patches: the shared patch embedding and head
    sample_kind = "picture"  # [3, H, W] in [0, 1]
    file_extensions = (*IMAGE_EXTENSIONS, ".npy")  # what `load` reads (image files via PIL)

    def __init__(
        self,
        *,
        patch_size: int = 16,
        temporal_patch: int = 4,
        max_tokens: int = 16384,
        min_side: int = 2,
        input_mean: Sequence[float] = (0.5, 0.5, 0.5),
        input_std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        check_positive_ints(
            "image",
            patch_size=patch_size,
            temporal_patch=temporal_patch,
            max_tokens=max_tokens,
            min_side=min_side,
        )
        self.patch_size = patch_size
        self.temporal_patch = temporal_patch
        self.max_tokens = max_tokens
        self.min_side = min_side
        self.value_mean, self.value_std = rgb_stats("image", input_mean, input_std)
        self.value_dim = temporal_patch * patch_size * patch_size * 3

    @property
    def content_dim(self) -> int:
        """Temporal slot 0: ``p * p * 3`` values."""
        return self.patch_size * self.patch_size * 3

    def load(self, path: str | os.PathLike) -> torch.Tensor:
        """An image file as float32 ``[3, H, W]`` in [0, 1] (its size checked against
        ``max_tokens`` from the header, before decoding), or a ``.npy`` array as it is."""
        if Path(path).suffix.lower() == ".npy":
            return super().load(path)
        self.check_size(*image_size(path))
        return to_image_tensor(path, min_side=self.min_side)

    def save(self, sample: torch.Tensor, stem: str | os.PathLike) -> list[Path]:
        """``stem.png``: the picture ``[3, H, W]`` (clamped to [0, 1], rounded to 8 bits)."""
        from PIL import Image

        path = Path(stem).with_suffix(".png")
        rgb = sample.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # [H, W, 3]
        Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path)
        return [path]

    def check_size(self, H: int, W: int) -> tuple[int, int]:
        """The token grid ``(gh, gw)`` of an ``H x W`` image.

        Raises:
            TooManyTokensError: more than ``max_tokens`` tokens.
        """
        p = self.patch_size
        gh, gw = -(-int(H) // p), -(-int(W) // p)
        if gh * gw > self.max_tokens:
            raise TooManyTokensError(
                f"image: {H}x{W} gives {gh * gw} tokens, above max_tokens={self.max_tokens}"
            )
        return gh, gw

    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        size = image_size(sample)
        if size is not None:  # the guard before the decode: header or shape only
            self.check_size(*size)
        x = to_image_tensor(sample, min_side=self.min_side)  # [3, H, W]
        _, H, W = x.shape
        p, pt = self.patch_size, self.temporal_patch
        gh, gw = self.check_size(H, W)
        if (gh * p, gw * p) != (H, W):
            x = F.pad(x[None], (0, gw * p - W, 0, gh * p - H), mode="replicate")[0]
        patches = x.reshape(3, gh, p, gw, p).permute(1, 3, 2, 4, 0)  # [gh, gw, p, p, 3]
        values = x.new_zeros(gh * gw, pt, p, p, 3)  # [n, pt, p, p, 3]
        values[:, 0] = patches.reshape(gh * gw, p, p, 3)
        coords = raster_coords((1, gh, gw), layout=self.layout)  # [n, 4] = (0, x, y, 0)
        meta = {"size": [H, W], "grid": [1, gh, gw], "patch": [pt, p, p]}
        return values.reshape(gh * gw, self.value_dim), coords, meta

    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        t, gh, gw = meta["grid"]
        return int(t), int(gh), int(gw)

    def unpatchify(
        self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]
    ) -> torch.Tensor:
        try:
            H, W = (int(v) for v in meta["size"])
            grid = self.grid_shape(meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModalityInputError(
                f"image: metadata lacks a valid 'size'/'grid': {meta}"
            ) from exc
        if grid[0] != 1:
            raise ModalityInputError(f"image: meta grid {list(grid)} must have t = 1")
        check_decode_grid(
            "image",
            (H, W),
            grid[1:],
            (self.patch_size, self.patch_size),
            tokens=values.shape[0],
            max_tokens=self.max_tokens,
        )
        self.check_values(values)
        p, pt = self.patch_size, self.temporal_patch
        _, gh, gw = grid
        dense, _ = scatter_to_grid(values, coords, grid, layout=self.layout)  # [d, 1, gh, gw]
        dense = dense.reshape(pt, p, p, 3, gh, gw)[0]  # slot 0: [p, p, 3, gh, gw]
        image = dense.permute(2, 3, 0, 4, 1).reshape(3, gh * p, gw * p)  # [3, gh*p, gw*p]
        return image[:, :H, :W]

    def examples(self, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        sizes = [(16, 16), (17, 33), (2, 40), (48, 20)]
        return [torch.rand(3, h, w, generator=g) for h, w in sizes]

    def invalid_examples(self) -> list[Any]:
        return [
            torch.zeros(3, 0, 8),  # 0 pixels
            torch.zeros(3, 1, 1),  # 1 pixel
            torch.full((3, 8, 8), float("nan")),
            torch.full((3, 8, 8), 2.0),  # out of [0, 1]
            torch.zeros(2, 8, 8),  # two channels
            torch.zeros(3, 8, 8, dtype=torch.int64),
            np.zeros((8, 8, 5), dtype=np.uint8),
            "/nonexistent/atoken/not-an-image.png",
            42,
            torch.zeros(3, 16 * 16400, 2),  # 16400 tokens: above the default max_tokens
        ]


@hookimpl
def register_modalities(register) -> None:
    register("image", ImageModality)
