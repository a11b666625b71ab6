"""The ``meshes`` data source: assets of a mesh store with random held-in views per step.

A batch is ``batch_size`` :class:`~.store.MeshRecord` s from this process's share of the
training assets, each with ``views_per_step`` of its feature views, all drawn from
(seed, rank, step, micro) alone. Held-out assets (``heldout`` names, else the last one) keep
their evaluation views, which no asset is ever trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from atoken.core.errors import ConfigError
from atoken.data.sources import SourceContext, split_heldout
from atoken.modalities.mesh.store import MeshRecord, MeshStore

__all__ = ["MeshSource"]


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"meshes: {attribute.name} must be a positive int, got {value!r}")


@attrs.define(kw_only=True, slots=False)
class MeshSource:
    """``meshes``: the mesh store at ``path`` (written by ``atoken data import meshes``)."""

    context: SourceContext = attrs.field(factory=SourceContext)
    path: str = ""
    batch_size: int = attrs.field(default=1, validator=_positive)
    views_per_step: int = attrs.field(default=4, validator=_positive)
    heldout_choice: tuple[str, ...] = attrs.field(default=(), converter=_names, alias="heldout")

    modality: str = attrs.field(init=False, default="mesh")
    heldout: list[MeshRecord] = attrs.field(init=False, factory=list)
    heldout_names: tuple[str, ...] = attrs.field(init=False, default=())

    def __attrs_post_init__(self) -> None:
        if not self.path:
            raise ConfigError("meshes needs path = the mesh store's folder")
        self.store = MeshStore(self.path)
        views = self.store.settings.views
        if self.views_per_step > views:
            raise ConfigError(f"meshes: views_per_step {self.views_per_step} > {views} views")
        train, held = split_heldout(self.store.names, self.heldout_choice, self.path)
        ctx = self.context
        self.train: Sequence[str] = [self.store.names[i] for i in train][ctx.rank :: ctx.world_size]
        if not self.train:
            raise ConfigError(f"meshes: no training asset for rank {ctx.rank} of {ctx.world_size}")
        self.heldout_names = tuple(self.store.names[i] for i in held)
        self.heldout = [self.store.record(n) for n in self.heldout_names]

    @staticmethod
    def example_data(folder: str | os.PathLike) -> dict[str, Any]:
        """The ``data`` table of a small real source for contract tests: two pybullet meshes
        (duck and teddy) imported once into ``folder`` at 48 px, 4 + 2 views, a 16^3 grid."""
        from atoken.modalities.mesh.pybullet_sets import pybullet_root
        from atoken.modalities.mesh.store import MeshSettings, import_meshes

        path = os.path.join(os.fspath(folder), "example_meshes")
        root = pybullet_root()
        sources = [os.path.join(root, "duck.obj"), os.path.join(root, "teddy2_VHACD_CHs.obj")]
        settings = MeshSettings(views=4, eval_views=2, render_size=48, resolution=16)
        import_meshes(sources, path, settings=settings, progress=False)
        return {"source": "meshes", "path": path, "views_per_step": 2}

    def batch(self, step: int, micro: int = 0) -> list[MeshRecord]:
        c = self.context
        rng = np.random.default_rng([c.seed, c.rank, step, micro])
        picks = rng.choice(
            len(self.train), self.batch_size, replace=len(self.train) < self.batch_size
        )
        views = self.store.settings.views
        return [
            self.store.record(
                self.train[int(i)],
                views=sorted(rng.choice(views, self.views_per_step, replace=False).tolist()),
            )
            for i in picks
        ]
