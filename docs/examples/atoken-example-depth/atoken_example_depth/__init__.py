"""atoken-example-depth: a one-channel depth-map modality, as a third-party plugin.

Installed, it is found through its entry point (``[project.entry-points.atoken]`` in its
``pyproject.toml``) and adds the modality ``depth`` to ``atoken.get_registry().modalities``.

Shapes:
    sample  float32 [H, W] depth map (metres, any finite value)
    values  float32 [n, p * p], one channel per pixel of a p x p patch, laid out (ph, pw)
    coords  int32 [n, 4] = (0, x, y, 0): x the patch column, y the patch row

Its value dimension (p * p = 256) differs from the encoder's patch dimension (3072), so the
tokenizer gives it its own input projection (``tok.projections.inputs["depth"]``) and its own
``pixels`` head built for 256 values (``tok.heads["depth"]``) instead of padding it to three
channels. Depths are normalised as ``(d - depth_mean) / depth_std`` (set both to your data's
statistics through ``modality_params={"depth": {...}}``); the 2D position table applies, as
for images.

It also trains (``training.py``): the data source ``synthetic_depth``, the task
``depth_reconstruction`` and the metric ``depth_error``; ``train.toml`` beside the package is a
run file that trains images and depth maps together with ``atoken train``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import atoken
from atoken.core.coords import raster_coords, scatter_to_grid
from atoken_example_depth.training import (
    DepthError,
    DepthReconstructionTask,
    SyntheticDepth,
    register_data_sources,
    register_metrics,
    register_tasks,
)

__all__ = [
    "DepthError",
    "DepthModality",
    "DepthReconstructionTask",
    "SyntheticDepth",
    "register_data_sources",
    "register_metrics",
    "register_modalities",
    "register_tasks",
]


class DepthModality(atoken.Modality):
    """Depth maps ``[H, W]`` as p x p one-channel patches at native resolution."""

    name = "depth"
    layout = "thw"
    sample_ndim = 2  # [H, W]; a [B, H, W] tensor is a batch
    uses_pos_table = True

    def __init__(
        self,
        *,
        patch_size: int = 16,
        max_tokens: int = 16384,
        depth_mean: float = 0.0,
        depth_std: float = 1.0,
    ) -> None:
        for label, value in (("patch_size", patch_size), ("max_tokens", max_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise atoken.ModalityInputError(f"depth: {label} must be >= 1, got {value!r}")
        if not float(depth_std) > 0:
            raise atoken.ModalityInputError(f"depth: depth_std must be > 0, got {depth_std!r}")
        self.patch_size = patch_size
        self.max_tokens = max_tokens
        self.value_dim = patch_size * patch_size
        self.value_mean, self.value_std = (float(depth_mean),), (float(depth_std),)

    def _check(self, sample: Any) -> torch.Tensor:
        if not isinstance(sample, torch.Tensor):
            raise atoken.ModalityInputError(
                f"depth: expected a tensor, got {type(sample).__name__}"
            )
        if sample.ndim == 3 and sample.shape[0] == 1:
            sample = sample[0]  # [1, H, W] -> [H, W]
        if sample.ndim != 2 or min(sample.shape) < 1:
            raise atoken.ModalityInputError(f"depth: expected [H, W], got {tuple(sample.shape)}")
        if not sample.is_floating_point():
            raise atoken.ModalityInputError(f"depth: expected a float tensor, got {sample.dtype}")
        if not bool(torch.isfinite(sample).all()):
            raise atoken.ModalityInputError("depth: contains NaN or infinite values")
        return sample.float()

    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        d = self._check(sample)  # [H, W]
        H, W = d.shape
        p = self.patch_size
        gh, gw = -(-H // p), -(-W // p)
        if gh * gw > self.max_tokens:
            raise atoken.TooManyTokensError(f"depth: {gh * gw} tokens > {self.max_tokens}")
        d = F.pad(d[None, None], (0, gw * p - W, 0, gh * p - H), mode="replicate")[0, 0]
        values = d.reshape(gh, p, gw, p).permute(0, 2, 1, 3)  # [gh, gw, p, p]
        coords = raster_coords((1, gh, gw), layout=self.layout)  # [n, 4]
        meta = {"size": [H, W], "grid": [1, gh, gw]}
        return values.reshape(gh * gw, p * p), coords, meta

    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        t, gh, gw = meta["grid"]
        return int(t), int(gh), int(gw)

    def unpatchify(
        self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]
    ) -> torch.Tensor:
        try:
            H, W = (int(v) for v in meta["size"])
            _, gh, gw = grid = self.grid_shape(meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise atoken.ModalityInputError(f"depth: metadata lacks 'size'/'grid': {meta}") from exc
        self.check_values(values)
        p = self.patch_size
        dense, _ = scatter_to_grid(values, coords, grid, layout=self.layout)  # [p*p, 1, gh, gw]
        d = dense.reshape(p, p, gh, gw).permute(2, 0, 3, 1)  # [gh, p, gw, p]
        return d.reshape(gh * p, gw * p)[:H, :W]

    def examples(self, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [torch.rand(h, w, generator=g) * 10 for h, w in [(16, 16), (5, 37), (40, 9)]]

    def invalid_examples(self) -> list[Any]:
        return [
            torch.zeros(0, 4),
            torch.zeros(2, 3, 4),
            torch.full((4, 4), float("nan")),
            torch.zeros(4, 4, dtype=torch.int32),
            [[1.0, 2.0]],
        ]


@atoken.hookimpl
def register_modalities(register) -> None:
    register("depth", DepthModality)
