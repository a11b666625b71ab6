"""Tasks: what one ``[[tasks]]`` table trains, and the generic ``reconstruction`` task.

A task joins a modality, a data source, loss terms and metrics (:class:`Task`). A task factory
registered through ``register_tasks`` is called as ``factory(spec=TaskSpec, context=
TaskContext)``. :class:`ReconstructionTask` is the base of the built-ins and of plugin tasks:

    samples = source.batch(step, micro)                    list of [..., H, W] float32
    out = model(model.prepare(samples, modality))          ModelOutput (one forward pass)
    L = sum_i w_i * loss_i(inputs_i)                        loss_i picks what it consumes:

        loss.inputs   prediction, target             context
        "samples"     out.samples, samples           latent, bottleneck terms
        "terms"       None, None                     latent, bottleneck terms (e.g. kl)
        "latent"      out.latent, None               latent, bottleneck terms

(``"embeddings"`` losses need captions: :class:`atoken.tasks.alignment.TextAlignmentTask`.) A
loss whose inputs the task does not provide is a ``ConfigError`` when the task is built.

Evaluation reconstructs the source's held-out samples whole, runs the task's metrics
(distributional ones on 128 px tiles of ``[C, H, W]`` samples so they see enough of them) and
draws ``previews`` held-out samples beside their reconstructions. A metric that fails there is
a :class:`~atoken.plugins.metrics.base.MetricFailure` in the metrics (the run logs it and goes
on); a distributional metric with no held-out sample of 128 px on both sides (no tile to score)
is a ``ConfigError`` when the task is built (:func:`tile_problem`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import torch
from torch import nn

from atoken.core.errors import ConfigError, DataModalityError, UnknownComponentError
from atoken.data.sources import SourceContext, build_source
from atoken.data.webdataset_source import WebDatasetSource
from atoken.engine.runconfig import LossTerm, TaskSpec, structure
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.metrics.base import guarded, metric_scores
from atoken.tasks.planning import BatchShape, grid_batch

__all__ = [
    "LossTerm",
    "ReconstructionParams",
    "ReconstructionTask",
    "Task",
    "TaskContext",
    "TaskSpec",
    "build_task",
    "clamp_range",
    "evaluate_samples",
    "loss_inputs",
    "named_in",
    "tile_problem",
    "tiles",
]

TILE = 128


@attrs.frozen(kw_only=True)
class TaskContext:
    """What a task is built with: the model it trains and the data-source context."""

    model: Any
    sources: SourceContext = attrs.field(factory=SourceContext)


@runtime_checkable
class Task(Protocol):
    """One task of a run (the trainer's :class:`~atoken.engine.trainer.TrainTask`, per task)."""

    label: str
    weight: float
    modality: str

    def batch(self, step: int, micro: int) -> Any:
        """The batch of (step, micro-step); must depend on nothing else."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """(this task's loss, named float terms for the log)."""

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        """Held-out metrics; pictures go to ``out_dir``."""


def build_task(spec: TaskSpec, context: TaskContext) -> Task:
    """The registered task ``spec.name`` built from its table.

    Raises:
        ConfigError: an unknown task (close names listed) or a table the task rejects.
    """
    from atoken.core.errors import UnknownComponentError
    from atoken.plugins.manager import get_registry

    registry = get_registry().tasks
    try:
        factory = registry.get(spec.name)
    except UnknownComponentError as exc:
        raise ConfigError(f"[[tasks]] {exc}") from None
    task = factory(spec=spec, context=context)
    if not isinstance(task, Task):
        raise ConfigError(
            f"task {spec.name!r} (plugin {registry.plugin_of(spec.name)!r}) built a "
            f"{type(task).__name__}, which lacks label, weight, modality, batch, loss or evaluate"
        )
    return task


def named_in(where: str, kind: str, registry: Any, name: str, build: bool = True, **params):
    """The component ``name`` of ``registry`` (built with ``params``, or its factory with
    ``build=False``).

    Raises:
        UnknownComponentError: an unknown name, the message naming ``where`` it was asked
            for (``[[tasks]] <label>``) and close matches.
    """
    if name not in registry:
        known = registry.names()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        raise UnknownComponentError(f"{kind} in {where}:", name, known, close)
    return registry.create(name, **params) if build else registry.get(name)


def loss_inputs(loss: Any) -> str:
    """What a loss consumes (its ``inputs`` attribute; ``"samples"`` when it has none)."""
    return str(getattr(loss, "inputs", "samples"))


def _unexported(loss: Any, inputs: str, bottleneck: Any) -> tuple[str, ...]:
    """The bottleneck terms a ``"terms"`` loss reads (its ``reads``) that ``bottleneck`` does
    not export (its ``exports``); nothing when either does not say."""
    reads, exports = getattr(loss, "reads", None), getattr(bottleneck, "exports", None)
    if inputs != "terms" or reads is None or exports is None:
        return ()
    return tuple(name for name in reads if name not in exports)


def tiles(samples: Sequence[torch.Tensor], size: int = TILE) -> list[torch.Tensor]:
    """Non-overlapping ``size`` x ``size`` tiles of each ``[C, H, W]`` sample (edges that do
    not fit dropped)."""
    out = []
    for x in samples:
        H, W = x.shape[-2:]
        for top in range(0, H - size + 1, size):
            for left in range(0, W - size + 1, size):
                out.append(x[..., top : top + size, left : left + size])
    return out


def tile_problem(
    name: str, metric: Any, samples: Sequence[Any], what: str = "samples", size: int = TILE
) -> str:
    """Why metric ``name`` (``metric``: it or its factory) cannot score ``samples`` (``what``
    they are): a distributional metric scores ``size`` px tiles (:func:`tiles`), and none of
    the samples (``[..., H, W]`` tensors) is ``size`` px on both sides. ``""`` when it can,
    when it is not distributional, and for no samples or samples that are not pixel grids."""
    if not getattr(metric, "distributional", False) or not samples:
        return ""
    if not all(isinstance(x, torch.Tensor) and x.dim() >= 2 for x in samples):
        return ""
    sides = [(int(x.shape[-2]), int(x.shape[-1])) for x in samples]
    if any(min(hw) >= size for hw in sides):
        return ""
    H, W = max(sides, key=lambda hw: (min(hw), hw))
    return (
        f"metric {name!r} is distributional: it scores {size} x {size} px tiles cut from each "
        f"sample, so it needs samples of at least {size} px on both sides, and none of the "
        f"{len(sides)} {what} is (the largest: {H} x {W})"
    )


def _score(metric: Any, reconstructions: Sequence[Any], originals: Sequence[Any]) -> dict:
    metric.reset()
    if getattr(metric, "distributional", False):
        metric.update(tiles(reconstructions), tiles(originals))
    else:
        metric.update(list(reconstructions), list(originals))
    return metric.compute()


def evaluate_samples(
    metrics: dict[str, Any],
    reconstructions: Sequence[torch.Tensor],
    originals: Sequence[torch.Tensor],
) -> dict[str, float]:
    """Run each metric (reset, update, compute); distributional metrics get 128 px tiles. A
    metric that raises gives ``{name: MetricFailure(reason)}`` (:func:`guarded`) and the
    others still run."""
    out: dict[str, float] = {}
    for name, metric in metrics.items():
        out.update(guarded(name, partial(_score, metric, reconstructions, originals)))
    return out


def clamp_range(value: Any) -> tuple[float, ...]:
    value = tuple(float(v) for v in value)
    if value and (len(value) != 2 or value[0] >= value[1]):
        raise ConfigError(f"clamp must be [] or [low, high] with low < high, got {list(value)}")
    return value


@attrs.frozen(kw_only=True)
class ReconstructionParams:
    """The task-table keys of a reconstruction task beyond :class:`TaskSpec`'s."""

    previews: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    # reconstructions clamped to [low, high] before metrics and pictures ([]: not clamped)
    clamp: tuple[float, ...] = attrs.field(default=(), converter=clamp_range)


class ReconstructionTask:
    """Reconstruct a source's samples of one modality (the ``reconstruction`` task).

    Subclasses set the class defaults and may override :meth:`reconstruct_heldout` and
    :meth:`save_previews`; :class:`ReconstructionParams` subclasses add table keys.
    """

    Params: ClassVar[type] = ReconstructionParams
    default_source: ClassVar[str] = ""  # "": the table must name a data source
    default_modality: ClassVar[str] = ""  # "": the data source's modality
    default_losses: ClassVar[tuple[LossTerm, ...]] = (
        LossTerm(name="l1", weight=0.2),
        LossTerm(name="kl", weight=1e-8),
    )
    default_metrics: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ("samples", "terms", "latent")

    @classmethod
    def example_data(cls, folder: str | Path) -> dict[str, Any]:
        """The ``data`` table of a small real source for contract tests: for the generic task
        (no default source or modality) a small webdataset of bundled photos
        (:meth:`WebDatasetSource.example_data`); none for a subclass with defaults of its own
        (it says what it reads, or gives its own ``example_data``)."""
        if cls.default_source or cls.default_modality:
            return {}
        return WebDatasetSource.example_data(folder)

    def __init__(self, *, spec: TaskSpec, context: TaskContext) -> None:
        from atoken.plugins.manager import get_registry

        self.spec, self.label, self.weight = spec, spec.key, float(spec.weight)
        where = f"[[tasks]] {self.label}"
        self.params = structure(self.Params, spec.params, f"tasks.{self.label}")
        data = dict(spec.data) or ({"source": self.default_source} if self.default_source else {})
        if not data:
            raise ConfigError(f"{where}: name a data source: data = {{ source = ... }}")
        self.source = build_source(data, context.sources, where=where)
        self.modality = spec.modality or self.default_modality or self.source.modality
        if self.source.modality != self.modality:
            raise DataModalityError(
                f"{where} trains {self.modality!r} but its data source {data['source']!r} "
                f"holds {self.source.modality!r} samples"
            )
        known = tuple(getattr(context.model.config, "modalities", None) or ())
        if known and self.modality not in known:
            raise ConfigError(
                f"{where}: the tokenizer has no {self.modality!r} modality (it has "
                f"{list(known)}); add it to [model] overrides.modalities or modality_params"
            )
        # its samples' hooks (draw) and kind: a plain object, the same on a shape-only model
        self.sample_modality = context.model.modality(self.modality)
        registry = get_registry()
        self.losses: list[tuple[LossTerm, Any, str]] = []
        for term in self.default_losses if spec.losses is None else spec.losses:
            fn = named_in(where, "loss", registry.losses, term.name, **dict(term.params))
            inputs = loss_inputs(fn)
            if inputs not in self.provides:
                raise ConfigError(
                    f"{where}: loss {term.name!r} consumes {inputs}, which task {spec.name!r} "
                    f"does not provide (it provides {', '.join(self.provides)})"
                )
            self.losses.append((term, fn, inputs))
            missing = _unexported(fn, inputs, getattr(context.model, "bottleneck", None))
            if missing:
                raise ConfigError(
                    f"{where}: loss {term.name!r} reads the bottleneck term "
                    f"{', '.join(map(repr, missing))}, which the model's "
                    f"{type(context.model.bottleneck).__name__} does not export (it exports "
                    f"{list(context.model.bottleneck.exports) or 'none'}): drop the loss here "
                    "or keep a bottleneck that exports it"
                )
        names = self.default_metrics if spec.metrics is None else spec.metrics
        for name in names:  # before building it: a metric's weights are not needed to know
            factory = named_in(where, "metric", registry.metrics, name, build=False)
            if not metric_scores(factory, self.modality, self.metric_kind):
                scores = getattr(factory, "modality", None) or " or ".join(factory.accepts)
                raise ConfigError(
                    f"{where}: metric {name!r} scores {scores} samples; this task gives it "
                    f"{self.metric_kind!r} samples (modality {self.modality!r}): choose "
                    "metrics registered for them (atoken plugins lists them)"
                )
            problem = tile_problem(name, factory, self.source.heldout, "held-out samples")
            if problem:
                raise ConfigError(
                    f"{where}: {problem}; hold out larger samples (the data source's "
                    f"heldout) or drop {name!r} from metrics"
                )
        self.metrics = {name: registry.metrics.create(name) for name in names}

    @property
    def metric_kind(self) -> str:
        """The kind of the samples its metrics score (``SAMPLE_KINDS``): its modality's
        ``sample_kind``; a task that scores something else (renders of a mesh) says so."""
        return self.sample_modality.sample_kind

    @classmethod
    def plan_batch(cls, spec: TaskSpec, config: Any) -> BatchShape:
        """The micro-batch ``spec``'s data table asks for (:func:`grid_batch`), for the
        tokenizer ``config``, with no data read (``atoken train --plan``). A task whose
        samples are not crops or clips of a pixel grid overrides it."""
        data = dict(spec.data) or ({"source": cls.default_source} if cls.default_source else {})
        return grid_batch(data, config, where=f"[[tasks]] {spec.key}")

    # ------------------------------------------------------------------------- training
    def batch(self, step: int, micro: int) -> Any:
        return self.source.batch(step, micro)

    def data_position(self, step: int) -> int | None:
        """The source's position before ``step`` (None: its batches depend on the step only)."""
        position = getattr(self.source, "data_position", None)
        return int(position(step)) if callable(position) else None

    def resume_data(self, step: int, position: int) -> None:
        """Hand a checkpoint's :meth:`data_position` back to the source."""
        resume = getattr(self.source, "resume_data", None)
        if callable(resume):
            resume(step, position)

    def count(self, batch: Any) -> int:
        """What the losses average over: the samples (each loss is a mean per sample, then
        over the samples), so ranks weigh their micro-batches by it."""
        return len(batch)

    def wants(self, *inputs: str) -> bool:
        """Whether a loss of the task consumes any of ``inputs``."""
        return any(i in inputs for _, _, i in self.losses)

    def loss_terms(
        self,
        out: Any,
        samples: Sequence[torch.Tensor],
        extra: dict[str, Any] | None = None,
        *,
        inputs_of: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``sum_i w_i loss_i`` of a :class:`~atoken.core.model.ModelOutput` and its targets.

        ``inputs_of`` gives ``(prediction, target)`` for input kinds a subclass provides
        (``{"samples": (renders, views), "gaussians": (gaussians, None)}``), replacing the
        defaults (``out.samples`` and ``samples`` for ``"samples"``)."""
        context = {"latent": out.latent, **out.bottleneck.terms, **(extra or {})}
        total = torch.zeros((), device=out.latent.feats.device)
        logs: dict[str, float] = {}
        for term, fn, inputs in self.losses:
            if inputs_of and inputs in inputs_of:
                prediction, target = inputs_of[inputs]
                value = fn(prediction, target, context)
            elif inputs == "samples":
                value = fn(out.samples, list(samples), context)
            elif inputs == "latent":
                value = fn(out.latent, None, context)
            elif inputs == "terms":
                value = fn(None, None, context)
            else:
                value = fn(out.embedding, context["text"], context)
            logs[getattr(fn, "log_name", None) or term.name] = float(value.detach())
            total = total + term.weight * value.float()
        return total, logs

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(model.prepare(batch, self.modality), decode=self.wants("samples"))
        return self.loss_terms(out, batch)

    # ------------------------------------------------------------------------- evaluation
    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        c = self.params.clamp
        return (x.clamp(c[0], c[1]) if c else x).float().cpu()

    def reconstruct_heldout(self, model: nn.Module) -> list[torch.Tensor]:
        """The held-out samples reconstructed (clamped as the task says), on the CPU."""
        return [self._clamp(y) for y in model.reconstruct(list(self.source.heldout), self.modality)]

    def save_previews(
        self,
        originals: Sequence[torch.Tensor],
        recons: Sequence[torch.Tensor],
        out_dir: Path,
        step: int,
    ) -> None:
        """Originals beside reconstructions (``out_dir/recon_stepNNNNNN.png``), drawn by the
        modality's ``draw`` (by default ``[3, H, W]`` samples as they are, one-channel maps
        scaled by the original's range); nothing is written when it draws none."""
        from atoken.viz import save_side_by_side

        draw = self.sample_modality.draw
        pairs = [(draw(o), draw(r, o)) for o, r in zip(originals, recons, strict=True)]
        if pairs and all(o is not None and r is not None for o, r in pairs):
            save_side_by_side(
                [o for o, _ in pairs],
                [r for _, r in pairs],
                out_dir / f"recon_step{step:06d}.png",
                labels=self.source.heldout_names[: len(pairs)],
            )

    def codebook_metrics(self, model: nn.Module, samples: Sequence[Any]) -> dict[str, float]:
        """With a discrete latent, how much of the codebook ``samples`` use
        (``codebook_usage``, ``codebook_perplexity``); else nothing."""
        size = getattr(model.bottleneck, "codebook_sizes", None)
        if size is None:
            return {}
        from atoken.plugins.bottlenecks.fsq import codebook_usage

        _, ids = model.encode_with_ids(list(samples), self.modality)
        return {f"codebook_{k}": v for k, v in codebook_usage(ids, size).items()}

    def evaluate(self, model: nn.Module, step: int, out_dir: Path) -> dict[str, float]:
        originals = [x.float().cpu() for x in self.source.heldout]
        recons = self.reconstruct_heldout(model)
        metrics = evaluate_samples(self.metrics, recons, originals)
        metrics.update(self.codebook_metrics(model, list(self.source.heldout)))
        k = self.params.previews
        if k:
            self.save_previews(originals[:k], recons[:k], out_dir, step)
        return metrics


@hookimpl
def register_tasks(register) -> None:
    register("reconstruction", ReconstructionTask)
