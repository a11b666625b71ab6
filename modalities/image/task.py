"""The ``image_reconstruction`` task: random crops of images, reconstructed whole at eval.

The paper's image loss, with its weights written as the task's loss weights:

    L = 0.2 * sum_i w_i L_i(recon, crops) + 1e-8 * L_KL      (defaults: l1 and kl)

Defaults: data ``photos`` (the bundled real photos; astronaut, coffee and flower held out),
metrics PSNR and SSIM, reconstructions clamped to [0, 1], a side-by-side PNG per evaluation.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from atoken.plugins.hookspecs import hookimpl
from atoken.tasks.base import ReconstructionParams, ReconstructionTask, clamp_range

__all__ = ["ImageParams", "ImageReconstructionTask"]


@attrs.frozen(kw_only=True)
class ImageParams(ReconstructionParams):
    """Image reconstruction keys: ``previews`` (held-out photos drawn) and ``clamp``."""

    clamp: tuple[float, ...] = attrs.field(default=(0.0, 1.0), converter=clamp_range)


class ImageReconstructionTask(ReconstructionTask):
    """Train a tokenizer to reconstruct random crops of real photos."""

    Params: ClassVar[type] = ImageParams
    default_source: ClassVar[str] = "photos"
    default_modality: ClassVar[str] = "image"
    default_metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim")


@hookimpl
def register_tasks(register) -> None:
    register("image_reconstruction", ImageReconstructionTask)
