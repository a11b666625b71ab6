"""The ``mesh_reconstruction`` task: decoded Gaussians rendered from held-in views, L1 to the
renders (the official 3D recipe).

    voxels  = [record.voxels for record in batch]             the assets' patches, (0, x, y, z)
    out     = model(model.prepare(voxels, "mesh"))            GaussianSet per asset
    renders = renderer(gaussians, record.views.camera)        [V, 3, H, W] per asset
    L = 0.2 * L1(renders, views) + 1e-8 * L_KL                (the defaults)

Losses of ``inputs = "samples"`` (``l1``, ``ssim``, ``lpips``...) compare the renders with the
views image by image; losses of ``inputs = "gaussians"`` (``gaussian_opacity``,
``gaussian_volume``) see the decoded sets. Evaluation renders the held-out assets from their
evaluation views (never trained on), reports the task's metrics and the same metrics of the
no-learning baseline (:func:`.gaussians.baseline_gaussians`, prefixed ``baseline_``), and writes
``mesh_stepNNNNNN.png`` (view | ours | baseline) and a turntable GIF per previewed asset.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from atoken.modalities.mesh.cameras import orbit_cameras
from atoken.modalities.mesh.data import MeshSource
from atoken.modalities.mesh.gaussians import baseline_gaussians
from atoken.plugins.hookspecs import hookimpl
from atoken.tasks.base import (
    LossTerm,
    ReconstructionParams,
    ReconstructionTask,
    clamp_range,
    evaluate_samples,
)
from atoken.tasks.planning import BatchShape, source_defaults

__all__ = ["MeshParams", "MeshReconstructionTask"]


@attrs.frozen(kw_only=True)
class MeshParams(ReconstructionParams):
    """3D keys: the renderer (a registered name and its parameters), the background, the
    turntable's frame count (0: none) and whether to score the baseline."""

    clamp: tuple[float, ...] = attrs.field(default=(0.0, 1.0), converter=clamp_range)
    renderer: str = "cpu"
    renderer_params: Mapping[str, Any] = attrs.field(factory=dict)
    background: float = 0.0
    turntable_frames: int = attrs.field(default=24, validator=attrs.validators.ge(0))
    baseline: bool = True


class MeshReconstructionTask(ReconstructionTask):
    """Reconstruct 3D assets as Gaussians, supervised by rendered views."""

    Params: ClassVar[type] = MeshParams
    default_source: ClassVar[str] = "meshes"
    default_modality: ClassVar[str] = "mesh"
    default_losses: ClassVar[tuple[LossTerm, ...]] = (
        LossTerm(name="l1", weight=0.2),
        LossTerm(name="kl", weight=1e-8),
    )
    default_metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim")
    provides: ClassVar[tuple[str, ...]] = ("samples", "terms", "latent", "gaussians")

    @property
    def metric_kind(self) -> str:
        """Its metrics score renders of the mesh and of its Gaussians: pictures."""
        return "picture"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from atoken.plugins.manager import get_registry

        p = self.params
        self.renderer = get_registry().renderers.create(
            p.renderer, background=p.background, **dict(p.renderer_params)
        )

    #: The contract tests' data table (a small mesh store they write): see MeshSource.
    example_data = staticmethod(MeshSource.example_data)

    #: Active voxels of an asset per R² of its R³ grid, for plans: a closed surface crosses
    #: about 4 R² cells (TRELLIS keeps assets under 32,768 = 8 * 64² voxels).
    PLANNED_VOXELS_PER_R2: ClassVar[int] = 4

    @classmethod
    def plan_batch(cls, spec: Any, config: Any) -> BatchShape:
        """``batch_size`` assets (the source's default else) of ``4 R²`` voxel tokens each,
        R the modality's grid side (its ``modality_params`` ``resolution``, else its
        default): an estimate, the true count is the asset's surface."""
        from atoken.plugins.manager import get_registry

        modality = spec.modality or cls.default_modality
        params = dict(config.modality_params).get(modality, {})
        resolution = params.get("resolution")
        if resolution is None:
            factory = get_registry().modalities.get(modality)
            resolution = inspect.signature(factory).parameters["resolution"].default
        data = dict(spec.data) or {"source": cls.default_source}
        batch = data.get("batch_size", source_defaults(data.get("source")).get("batch_size", 1))
        tokens = cls.PLANNED_VOXELS_PER_R2 * int(resolution) ** 2
        return BatchShape(
            samples=int(batch),
            tokens_mean=tokens,
            tokens_max=tokens,
            tokens_sq_mean=tokens**2,
            note=f"{tokens:,} voxels an asset is an estimate (4 R², R = {resolution}); the "
            "renders of the decoded Gaussians (views_per_step x render_size² each) are not "
            "counted",
        )

    def count(self, batch: Any) -> int:
        return len(batch)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(model.prepare([r.voxels for r in batch], self.modality), decode=True)
        renders, targets = [], []
        for gaussians, record in zip(out.samples, batch, strict=True):
            image = self.renderer(gaussians, record.views.camera).rgb  # [V, 3, H, W]
            renders.extend(image.unbind(0))
            targets.extend(record.views.rgb.to(image).unbind(0))
        inputs = {"samples": (renders, targets), "gaussians": (out.samples, None)}
        return self.loss_terms(out, targets, inputs_of=inputs)

    # ------------------------------------------------------------------------- evaluation
    def _render(self, gaussians: Any, camera: Any) -> list[torch.Tensor]:
        with torch.no_grad():
            return [self._clamp(x) for x in self.renderer(gaussians, camera).rgb]

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        records = list(self.source.heldout)
        with torch.no_grad():
            decoded = model.reconstruct([r.voxels for r in records], self.modality)
        originals, ours, base = [], [], []
        for record, gaussians in zip(records, decoded, strict=True):
            views = record.eval_views or record.views
            originals.extend(x.float().cpu() for x in views.rgb)
            ours.extend(self._render(gaussians, views.camera))
            if self.params.baseline:
                base.extend(self._render(baseline_gaussians(record.voxels), views.camera))
        metrics = evaluate_samples(self.metrics, ours, originals)
        metrics.update(self.codebook_metrics(model, [r.voxels for r in records]))
        if base:
            scored = evaluate_samples(self.metrics, base, originals)
            metrics.update({f"baseline_{k}": v for k, v in scored.items()})
        if self.params.previews:
            self._previews(records, decoded, originals, ours, base, out_dir, step)
        return metrics

    def _previews(self, records, decoded, originals, ours, base, out_dir: Path, step: int) -> None:
        from atoken.data.video_io import write_gif
        from atoken.viz import save_side_by_side

        k = min(self.params.previews, len(originals))
        extra = [base[:k]] if base else []
        columns = ("view", "ours", "baseline") if base else ("view", "ours")
        save_side_by_side(
            originals[:k], ours[:k], out_dir / f"mesh_step{step:06d}.png",
            columns=columns, extra=extra,
        )  # fmt: skip
        frames = self.params.turntable_frames
        if not frames:
            return
        size = int(records[0].views.camera.height[0])
        orbit = orbit_cameras(frames, size, elevation_degrees=20.0)
        for record, gaussians in list(zip(records, decoded, strict=True))[: self.params.previews]:
            clip = torch.stack(self._render(gaussians, orbit), dim=1)  # [3, T, H, W]
            stem = record.name.replace("/", "_").rsplit(".", 1)[0]
            write_gif(clip, out_dir / f"mesh_step{step:06d}_{stem}_turntable.gif", fps=12)


@hookimpl
def register_tasks(register) -> None:
    register("mesh_reconstruction", MeshReconstructionTask)
