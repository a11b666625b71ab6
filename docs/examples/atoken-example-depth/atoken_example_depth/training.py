"""Training depth maps with atoken: a data source, a task and a metric, all through hooks.

- ``synthetic_depth`` (``register_data_sources``): procedural depth maps ``[H, W]`` in metres
  (a floor receding from 1.5 m to 6 m and a few rounded objects in front of it), made from the
  run's seed, so nothing is downloaded; random crops through atoken's one crop sampler.
- ``depth_reconstruction`` (``register_tasks``): atoken's reconstruction task with depth
  defaults (source ``synthetic_depth``, modality ``depth``, L1 + KL, the metrics below).
- ``depth_error`` (``register_metrics``): RMSE in metres and mean absolute relative error.

A run file (``train.toml`` next to this package) trains images and depth in one run:
``atoken train docs/examples/atoken-example-depth/train.toml``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch

import atoken
from atoken.data import SourceContext
from atoken.engine.runconfig import LossTerm
from atoken.tasks import ReconstructionTask

__all__ = ["DepthError", "DepthReconstructionTask", "SyntheticDepth", "make_depth_maps"]


def make_depth_maps(count: int, height: int, width: int, seed: int) -> list[torch.Tensor]:
    """``count`` depth maps ``[height, width]`` in metres, a function of ``seed`` only."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0, 1, height)[:, None]  # [H, 1], 0 at the top
    cols = torch.linspace(0, 1, width)[None, :]  # [1, W]
    maps = []
    for _ in range(count):
        horizon = 0.2 + 0.3 * float(torch.rand((), generator=g))
        floor = 6.0 - 4.5 * ((rows - horizon).clamp(min=0) / (1 - horizon))  # [H, 1]
        depth = floor.expand(height, width).clone()
        for _ in range(int(torch.randint(1, 4, (), generator=g))):
            cy, cx, r = torch.rand(3, generator=g).tolist()
            r = 0.08 + 0.2 * r
            near = 1.5 + 3.0 * float(torch.rand((), generator=g))
            d2 = ((rows - cy) ** 2 + ((cols - cx) * width / height) ** 2) / r**2  # [H, W]
            bump = near - 0.5 * r * torch.sqrt((1 - d2).clamp(min=0))  # a rounded front
            depth = torch.where(d2 < 1, torch.minimum(depth, bump), depth)
        maps.append(depth)
    return maps


def _positive(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise atoken.ConfigError(f"synthetic_depth: {attribute.name} must be >= 1, got {value!r}")


@attrs.define(kw_only=True, slots=False)
class SyntheticDepth:
    """The ``synthetic_depth`` source: ``count`` maps of ``height`` x ``width``; the last
    ``heldout_count`` are held out; ``batch_size`` crops with sides in [crop_min, crop_max]."""

    context: SourceContext = attrs.field(factory=SourceContext)
    count: int = attrs.field(default=32, validator=_positive)
    height: int = attrs.field(default=64, validator=_positive)
    width: int = attrs.field(default=96, validator=_positive)
    heldout_count: int = attrs.field(default=2, validator=_positive)
    batch_size: int = attrs.field(default=4, validator=_positive)
    crop_min: int = attrs.field(default=32, validator=_positive)
    crop_max: int = attrs.field(default=64, validator=_positive)

    modality: ClassVar[str] = "depth"

    def __attrs_post_init__(self) -> None:
        if self.heldout_count >= self.count:
            raise atoken.ConfigError(
                f"synthetic_depth: heldout_count ({self.heldout_count}) must be < count "
                f"({self.count})"
            )
        maps = make_depth_maps(self.count, self.height, self.width, self.context.seed)
        train, held = maps[: -self.heldout_count], maps[-self.heldout_count :]
        self.sampler = self.context.sampler(  # atoken's crop sampler, this process's share
            train, batch_size=self.batch_size, crop_min=self.crop_min, crop_max=self.crop_max
        )
        self.heldout = held
        self.heldout_names = tuple(f"depth{i:03d}" for i in range(len(train), self.count))

    def batch(self, step: int, micro: int = 0) -> list[torch.Tensor]:
        return self.sampler.batch(step, micro)  # [h, w] float32 crops, metres


class DepthError:
    """``depth_error``: RMSE (metres) and mean absolute relative error of depth maps."""

    name = "depth_error"
    modality = "depth"  # what it scores (metric contracts feed it depth maps)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._se = self._rel = self._n = 0.0

    @torch.no_grad()
    def update(self, prediction, target) -> None:
        for p, t in zip(prediction, target, strict=True):
            if p.shape != t.shape or t.ndim not in (2, 3):
                raise atoken.ModalityInputError(
                    f"depth_error: prediction {tuple(p.shape)} and target {tuple(t.shape)} "
                    "must be depth maps [H, W] of one shape"
                )
            p, t = p.float(), t.float()
            self._se += float(((p - t) ** 2).sum())
            self._rel += float(((p - t).abs() / t.abs().clamp(min=1e-3)).sum())
            self._n += t.numel()

    def compute(self) -> dict[str, float]:
        if not self._n:
            raise atoken.ConfigError("depth_error: no depth maps yet; call update() first")
        return {"depth_rmse": math.sqrt(self._se / self._n), "depth_abs_rel": self._rel / self._n}


class DepthReconstructionTask(ReconstructionTask):
    """Reconstruct depth maps (atoken's reconstruction task with depth defaults)."""

    default_source: ClassVar[str] = "synthetic_depth"
    default_modality: ClassVar[str] = "depth"
    default_losses: ClassVar[tuple[LossTerm, ...]] = (
        LossTerm(name="l1", weight=1.0),
        LossTerm(name="kl", weight=1e-8),
    )
    default_metrics: ClassVar[tuple[str, ...]] = ("depth_error",)


@atoken.hookimpl
def register_data_sources(register) -> None:
    register("synthetic_depth", SyntheticDepth)


@atoken.hookimpl
def register_tasks(register) -> None:
    register("depth_reconstruction", DepthReconstructionTask)


@atoken.hookimpl
def register_metrics(register) -> None:
    register("depth_error", DepthError)
