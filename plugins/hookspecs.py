"""Hook specifications of atoken: the whole plugin API.

Registration hooks are called once each time the registries are built (on the first
:func:`atoken.get_registry` call, and again after :func:`atoken.plugins.refresh`). Each
receives a ``register(name, factory)`` callback; a plugin calls it once per component it adds.
``factory(**params)`` must build the component, so a class works as a factory. Every hook is
called with keyword arguments only and none is ``firstresult``: all plugins contribute.
``register_commands(cli)`` receives the ``atoken`` click group instead (as llm's hook does).

Every hook here is documented with its signature in ``docs/plugin_hooks.md`` and has a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import pluggy

__all__ = ["PROJECT_NAME", "Register", "hookimpl", "hookspec"]

PROJECT_NAME = "atoken"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: The callback registration hooks receive: ``register(name, factory)``.
Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_modalities(register: Register) -> None:
    """Add modalities: ``register("depth", DepthModality)``.

    The factory builds a :class:`atoken.Modality`. Called when the registries are built.
    Since 0.1.
    """


@hookspec
def register_bottlenecks(register: Register) -> None:
    """Add bottlenecks (the W_r map from encoder width to the latent, continuous or discrete).

    The factory takes keyword parameters such as ``in_dim`` and returns a ``torch.nn.Module``.
    Called when the registries are built. Since 0.1.
    """


@hookspec
def register_heads(register: Register) -> None:
    """Add decoder output heads (decoder tokens -> modality values, e.g. ``pixels``).

    Called when the registries are built. Since 0.1.
    """


@hookspec
def register_losses(register: Register) -> None:
    """Add losses: the factory builds a callable ``(prediction, target, context) -> scalar``.

    Called when the registries are built. Since 0.1.
    """


@hookspec
def register_attention_backends(register: Register) -> None:
    """Add attention backends: ``fn(q, k, v, seqlens) -> out`` over packed samples.

    q, k, v are ``[N, H, D]`` with all samples packed; each sample attends only to itself.
    The factory (called with no arguments) returns that function. Called when the registries
    are built. Since 0.1.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Add evaluation metrics (PSNR, SSIM, Fréchet distances, zero-shot accuracy...).

    Called when the registries are built. Since 0.1.
    """


@hookspec
def register_text_encoders(register: Register) -> None:
    """Add text encoders (frozen text towers whose space the semantic embedding is aligned to):
    ``register("minilm", MiniLMTextEncoder)``.

    The factory takes keyword parameters and returns an
    :class:`atoken.plugins.text_encoders.TextEncoder` (``dim``, ``encode(texts) -> [T, dim]``).
    Called when the registries are built. Since 0.1.
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Add training tasks: ``register("depth_reconstruction", DepthTask)``.

    A task is what one ``[[tasks]]`` table of a run file trains: a modality, a data source,
    loss terms, metrics and a weight in the mixture. The factory is called as
    ``factory(spec=TaskSpec, context=TaskContext)`` and returns an object with ``batch(step,
    micro)``, ``loss(model, batch)`` and ``evaluate(model, step, out_dir)``
    (:class:`atoken.tasks.Task`); subclassing :class:`atoken.tasks.ReconstructionTask` gives
    all three. Called when the registries are built. Since 0.2.
    """


@hookspec
def register_data_sources(register: Register) -> None:
    """Add data sources: ``register("depth_maps", DepthMaps)``.

    The factory takes the keyword parameters of a run file's ``data = { source = ..., ... }``
    table plus ``context`` (a :class:`atoken.data.SourceContext`: seed, rank, world size) and
    returns a :class:`atoken.data.DataSource` (``modality``, ``batch(step, micro)``,
    ``heldout``, ``heldout_names``). Called when the registries are built. Since 0.2.
    """


@hookspec
def register_stage_transforms(register: Register) -> None:
    """Add stage transforms: ``register("prune_heads", PruneHeads)``.

    A stage transform changes the tokenizer when a ``[[stages]]`` stage of a run file starts
    (``transforms = [{ name = "prune_heads", keep = 4 }]``). The factory takes the entry's
    keyword parameters and returns a callable ``transform(tokenizer, context)`` that changes
    the tokenizer in place, module by module, keeping ``tokenizer.config`` true to its modules
    (so ``save_pretrained`` / ``from_pretrained`` rebuild it); ``context`` is an
    :class:`atoken.engine.transforms.StageContext` (the stage, its built tasks and mixture). The
    transform also runs when a checkpoint of a later stage is resumed, to give the model the
    checkpoint's shape (the checkpoint's weights then replace the ones it set). Called when
    the registries are built. Since 0.3.
    """


@hookspec
def register_renderers(register: Register) -> None:
    """Add renderers of 3D Gaussians: ``register("my_splatter", MySplatter)``.

    The factory takes keyword parameters (a run file's ``renderer = { name = ..., ... }``)
    and returns a callable ``renderer(gaussians, camera) -> RenderOutput``: a
    :class:`atoken.modalities.mesh.GaussianSet` seen by a kornia ``PinholeCamera`` batch of V
    views gives ``rgb [V, 3, H, W]`` and ``alpha [V, H, W]``, differentiable with respect to
    the Gaussians, following the image formation of :mod:`atoken.modalities.mesh.splat`.
    Called when the registries are built. Since 0.3.
    """


# ---------------------------------------------------------------------------- command line
@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``atoken`` command line; ``cli`` is its top-level click group.

    A new command: ``@cli.command()`` or ``cli.add_command(group)`` (``atoken hello``). A
    subcommand of an existing group: add it to that group, reached through ``cli.commands``
    (``cli.commands["data"].commands["import"].add_command(points)`` gives ``atoken data
    import points``). Called once each time the command line is built, before it parses its
    arguments, one plugin at a time in loading order. A plugin whose hook raises, or that adds
    a name a command already has (names are never replaced), is warned about by name and
    none of its commands are added; the other commands work. Since 0.4.
    """


# ------------------------------------------------------------------------------ lifecycle
@hookspec
def atoken_train_start(trainer: Any) -> None:
    """Called once when ``Trainer.fit`` starts (after a resume has loaded its checkpoint).

    ``trainer`` is the :class:`atoken.engine.trainer.Trainer` (its ``cfg``, ``step``, ``model``,
    ``out_dir``). Return value ignored. Since 0.1.
    """


@hookspec
def atoken_step_end(trainer: Any, step: int, logs: dict[str, Any]) -> None:
    """Called after every optimizer step with the number of completed steps and the step's
    log record (loss, terms, lr, grad norm; ``skipped`` for a non-finite step).

    Return value ignored. Since 0.1.
    """


@hookspec
def atoken_eval_end(trainer: Any, step: int, metrics: dict[str, float]) -> None:
    """Called after each held-out evaluation with its metrics. Return value ignored.
    Since 0.1.
    """


@hookspec
def atoken_stage_end(trainer: Any, stage: str, metrics: dict[str, float]) -> None:
    """Called when a stage of the run ends (the last one too, when the run ends), after its
    held-out evaluation and after ``out_dir/stages/<stage>/`` is written. Return value
    ignored. Since 0.3.
    """


@hookspec
def atoken_checkpoint_saved(trainer: Any, step: int, path: Any) -> None:
    """Called after a checkpoint has been written atomically to ``path`` (a ``Path``).

    Return value ignored. Since 0.1.
    """
