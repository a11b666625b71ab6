"""Data sources: what a task trains and evaluates on, registered by name.

A ``[[tasks]]`` table's ``data = { source = "photos", batch_size = 8, crop_max = 128 }`` names a
source registered through the ``register_data_sources`` hook; the other keys are its
parameters, validated by the source (an unknown key is a ``ConfigError`` listing the known
ones). A source is built as ``factory(context=SourceContext, **params)`` and provides
(:class:`DataSource`):

    modality        the registered modality its samples belong to (the task checks it)
    batch(step, micro) -> list of float32 samples in the modality's layout, deterministic
    heldout         whole float32 samples, never trained on; heldout_names their names

Captioned sources (:class:`CaptionedSource`) also give ``captions`` (one per class),
``labelled_batch(step, micro) -> (samples, labels [B])`` and ``heldout_labels [K]``. A
source whose every sample has its own caption (web data: the streaming sources with a
``caption_key``) returns ``(samples, labels, texts)``: ``texts`` the batch's captions, read
where the batch is made (a data worker), and ``captions`` the held-out samples' captions.

Samples are float32: uint8 sources are scaled to [0, 1], float sources (metric depth, point
coordinates) keep their values. Crops and clips come from the one
:class:`~atoken.data.sampling.WindowSampler`, which draws only from this process's share
(``context.rank`` of ``context.world_size``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

from atoken.core.errors import ConfigError, UnknownComponentError
from atoken.data.sampling import WindowSampler

__all__ = [
    "CaptionedSource",
    "DataSource",
    "IndexView",
    "SourceContext",
    "build_source",
    "current_context",
    "split_heldout",
]


@attrs.frozen(kw_only=True)
class SourceContext:
    """What a source needs from the run: the seed, this process's rank and world size, the
    batches per optimizer step (``micro_steps``, the stage's ``[optim] grad_accum``) and how
    many unreadable samples a source may skip before it fails (``[train] max_bad_samples``)."""

    seed: int = 0
    rank: int = 0
    world_size: int = 1
    micro_steps: int = 1
    max_bad_samples: int = 16

    def __attrs_post_init__(self) -> None:
        if not (self.world_size >= 1 and 0 <= self.rank < self.world_size):
            raise ConfigError(f"need 0 <= rank < world_size, got {self.rank}, {self.world_size}")
        if self.micro_steps < 1 or self.max_bad_samples < 0:
            raise ConfigError(
                f"need micro_steps >= 1 and max_bad_samples >= 0, got {self.micro_steps}, "
                f"{self.max_bad_samples}"
            )

    def sampler(self, items: Sequence[Any], **params: Any) -> WindowSampler:
        """The crop (or clip) sampler of ``items`` for this run and process: ``params`` are
        :class:`~atoken.data.sampling.WindowSampler`'s (``batch_size``, ``crop_min``...)."""
        return WindowSampler(
            items, seed=self.seed, rank=self.rank, world_size=self.world_size, **params
        )


def current_context(seed: int = 0, **run: int) -> SourceContext:
    """The context of this process: rank and world size from ``torch.distributed`` when it is
    initialised, else from the ``RANK``/``WORLD_SIZE`` environment (torchrun), else 0 of 1;
    ``run`` gives the other fields (``micro_steps``, ``max_bad_samples``)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return SourceContext(seed=seed, rank=rank, world_size=world, **run)


@runtime_checkable
class DataSource(Protocol):
    """A registered source of training and held-out samples of one modality."""

    modality: str
    heldout: Sequence[torch.Tensor]
    heldout_names: tuple[str, ...]

    def batch(self, step: int, micro: int) -> list[torch.Tensor]:
        """The training samples of (step, micro-step); depends on nothing else."""


@runtime_checkable
class CaptionedSource(DataSource, Protocol):
    """A source whose samples have class captions (for text alignment)."""

    captions: tuple[str, ...]
    heldout_labels: torch.Tensor

    def labelled_batch(self, step: int, micro: int) -> tuple[Any, ...]:
        """(samples, labels ``[B]`` indexing ``captions``) of (step, micro-step), or
        (samples, labels, texts ``[B]``) for per-sample captions."""


def _accepted(factory: Any) -> list[str]:
    if attrs.has(factory):
        return [f.alias or f.name for f in attrs.fields(factory) if f.init and f.name != "context"]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return []
    return [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "context"]


def build_source(table: Mapping[str, Any], context: SourceContext, *, where: str) -> Any:
    """The data source a ``data = { source = NAME, ... }`` table describes.

    Raises:
        ConfigError: no ``source``, an unknown parameter (naming the known ones), or a value
            the source rejects; a store URL or folder given as the name says how to write it.
        UnknownComponentError: no source of that name is registered.
    """
    from atoken.plugins.manager import get_registry

    if not isinstance(table, Mapping) or not isinstance(table.get("source"), str):
        raise ConfigError(f"{where}: data must be a table with a source name, got {table!r}")
    name, params = table["source"], {k: v for k, v in table.items() if k != "source"}
    registry = get_registry().data_sources
    if name not in registry and ("://" in name or name.endswith(".zarr") or os.path.isdir(name)):
        key = "path" if os.path.isdir(name) and not name.endswith(".zarr") else "url"
        kind = "image_folder" if key == "path" else "media_store"
        raise ConfigError(
            f"{where}: data sources are named now; write "
            f'data = {{ source = "{kind}", {key} = "{name}" }}'
        )
    try:
        factory = registry.get(name)
    except UnknownComponentError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    known = _accepted(factory)
    unknown = sorted(set(params) - set(known)) if known else []
    if unknown:
        raise ConfigError(
            f"{where}: unknown data parameter(s) {unknown} for source {name!r} (plugin "
            f"{registry.plugin_of(name)!r}); known: {', '.join(known)}"
        )
    try:
        source = factory(context=context, **params)
    except ConfigError as exc:
        raise ConfigError(f"{where}: source {name!r}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{where}: source {name!r}: {exc}") from exc
    if not isinstance(source, DataSource):
        raise ConfigError(
            f"{where}: source {name!r} (plugin {registry.plugin_of(name)!r}) built a "
            f"{type(source).__name__}, which lacks modality, batch, heldout or heldout_names"
        )
    return source


class IndexView(Sequence):
    """The items of ``source`` at ``indices``, read on access (with ``length``/``window``
    passed through when the source has them)."""

    def __init__(self, source: Any, indices: Sequence[int]) -> None:
        self.source, self.indices = source, list(indices)
        self.names = tuple(source.names[i] for i in self.indices)
        if hasattr(source, "length"):
            self.length = lambda i: source.length(self.indices[i])
        if hasattr(source, "window"):
            self.window = lambda i, *a: source.window(self.indices[i], *a)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return self.source[self.indices[i]]


def split_heldout(names: Sequence[str], heldout: Sequence[str], src: str) -> tuple[list, list]:
    """(train, held-out) indices: the samples named in ``heldout``, else the last one.

    Raises:
        ConfigError: a held-out name the source lacks, or fewer than 2 samples.
    """
    held = [i for i, n in enumerate(names) if n in heldout]
    missing = set(heldout) - {names[i] for i in held}
    if missing:
        raise ConfigError(f"heldout names not in {src!r}: {sorted(missing)}")
    if len(names) < 2:
        raise ConfigError(f"source {src!r} needs 2 samples or more, has {len(names)}")
    held = held or [len(names) - 1]
    return [i for i in range(len(names)) if i not in held], held
