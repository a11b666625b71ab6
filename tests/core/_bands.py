"""A throwaway 12-band modality for the tests of #33 items 2 and 3: 12 bands x 16 x 16 = 3072
values per token, the width of the shared RGB patch embedding (and not RGB)."""

from __future__ import annotations

from typing import Any

import torch

import atoken
from atoken.core.coords import raster_coords, scatter_to_grid
from atoken.core.errors import ModalityInputError

BANDS, P = 12, 16


def bands_sample(seed: int = 0) -> torch.Tensor:
    """A ``[12, 32, 48]`` sample: 6 tokens."""
    return torch.rand(BANDS, 32, 48, generator=torch.Generator().manual_seed(seed))


class Bands(atoken.Modality):
    """12-band images ``[12, H, W]`` (H, W multiples of 16) as 16 x 16 x 12 patches."""

    name = "bands"
    layout = "thw"
    sample_ndim = 3

    def __init__(self) -> None:
        self.value_dim = BANDS * P * P  # 3072, as an RGB tubelet

    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        if not isinstance(sample, torch.Tensor) or sample.ndim != 3 or sample.shape[0] != BANDS:
            raise ModalityInputError(f"{self.name}: expected [12, H, W]")
        _, H, W = sample.shape
        gh, gw = H // P, W // P
        x = sample.float().reshape(BANDS, gh, P, gw, P)  # [c, gh, p, gw, p]
        values = x.permute(1, 3, 2, 4, 0).reshape(gh * gw, self.value_dim)  # [n, p * p * c]
        coords = raster_coords((1, gh, gw), layout=self.layout)  # [n, 4]
        return values, coords, {"grid": [1, gh, gw]}

    def unpatchify(self, values, coords, meta) -> torch.Tensor:
        grid = self.grid_shape(meta)
        dense, _ = scatter_to_grid(values, coords, grid, layout=self.layout)  # [d, 1, gh, gw]
        _, gh, gw = grid
        x = dense.reshape(P, P, BANDS, gh, gw).permute(2, 3, 0, 4, 1)  # [c, gh, p, gw, p]
        return x.reshape(BANDS, gh * P, gw * P)

    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        t, gh, gw = meta["grid"]
        return int(t), int(gh), int(gw)

    def examples(self, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [torch.rand(BANDS, 32, 48, generator=g)]

    def invalid_examples(self) -> list[Any]:
        return [torch.zeros(3, 16, 16)]
