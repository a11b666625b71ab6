"""The dry run of a run file before step 0: every stage's tasks, built against the model that
stage will have.

    transforms = build_transforms(cfg)        every stage's transforms (atoken.train)
    tasks = dry_run(cfg, transforms)          tasks[i]: stage i's tasks, built; the run trains them

The run's first tokenizer is built shape-only, on the meta device
(:func:`atoken.engine.plan.meta_tokenizer`: no weight is allocated or read), and each stage's
transforms change its shapes in order (their ``apply_shapes``; a plugin transform without one
is not applied here). Each stage's ``[[tasks]]`` are then built against that model as the stage
will build them: their data sources, losses and metrics, with every check a task makes when it
is built (the model has the task's modality; each loss consumes what the task provides, and a
``"terms"`` loss reads a term the stage's bottleneck exports; each metric is registered and can
score the held-out samples). So a mistake anywhere in a curriculum (a ``kl`` loss after
``to_fsq``, ``to_fsq`` groups that do not tile the latent ``expand_latent`` made, an unknown
metric in the last stage) fails before anything trains, its message prefixed with
``[[stages]] <name> / `` when the run file has ``[[stages]]`` (the task's own messages name its
``[[tasks]] <label>``).

The tasks are built once: each stage trains the tasks built here (the dry run reads each data
source's held-out samples once, as building the stage did before).
"""

from __future__ import annotations

import torch
from torch import nn

from atoken.core.errors import AtokenError
from atoken.data.sources import current_context
from atoken.engine.plan import apply_shapes, meta_tokenizer
from atoken.engine.runconfig import RunConfig
from atoken.engine.transforms import StageTransform
from atoken.tasks import Task, TaskContext, build_task

__all__ = ["dry_run", "stage_tasks"]


def stage_tasks(cfg: RunConfig, index: int, model: nn.Module) -> list[Task]:
    """The tasks of stage ``index`` of ``cfg.plan()``, built against ``model`` (the real one,
    or the shape-only one of :func:`dry_run`) with the stage's data context."""
    stage = cfg.plan()[index]
    sources = current_context(
        cfg.run.seed,
        micro_steps=cfg.stage_optim(stage).grad_accum,
        max_bad_samples=cfg.train.max_bad_samples,
    )
    context = TaskContext(model=model, sources=sources)
    return [build_task(spec, context) for spec in stage.tasks]


def dry_run(cfg: RunConfig, transforms: list[list[StageTransform]]) -> list[list[Task]]:
    """Every stage's tasks, built against the shape-only model of that stage (see the module
    docstring); ``transforms``: every stage's, built.

    Raises:
        AtokenError: what building a stage's transforms or tasks raised (a ``ConfigError``,
            an ``UnknownComponentError``, a data source's error), its message prefixed with
            ``[[stages]] <name> / `` in a run file with ``[[stages]]``.
    """
    with torch.device("meta"):
        model, _ = meta_tokenizer(cfg)
    built = []
    for index, stage in enumerate(cfg.plan()):
        try:
            with torch.device("meta"):
                for transform in transforms[index]:
                    apply_shapes(transform, model, stage, index, call=False)
            built.append(stage_tasks(cfg, index, model))  # real data: not on the meta device
        except AtokenError as exc:
            exc.within(f"[[stages]] {stage.name} / " if cfg.stages else "")
            raise
    return built
