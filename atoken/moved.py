"""Old import paths of moved modules keep working (#31: the rooms moved, user code did not).

``import atoken.core.runconfig`` gives the module that now lives at ``atoken.engine.runconfig``
(the same module object, so patching either name patches both), with a
``DeprecationWarning`` naming the new path. The aliases are resolved by a finder installed
when this module is imported (the first thing ``import atoken`` does), so the old rooms hold
no forwarding files: ``atoken.core`` imports nothing of the engine or of storage
(``tests/test_layering.py``).

    MOVED["atoken.core.runconfig"] == "atoken.engine.runconfig"
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "MovedModuleFinder", "install"]

#: Old module path -> where the module lives now.
MOVED: dict[str, str] = {
    # the engine left core (#31)
    "atoken.core.trainer": "atoken.engine.trainer",
    "atoken.core.trainer_state": "atoken.engine.trainer_state",
    "atoken.core.distributed": "atoken.engine.distributed",
    "atoken.core.sharded": "atoken.engine.sharded",
    "atoken.core.sharded_checkpoint": "atoken.engine.sharded_checkpoint",
    "atoken.core.run_changes": "atoken.engine.run_changes",
    "atoken.core.run_folder": "atoken.engine.run_folder",
    "atoken.core.run_sections": "atoken.engine.run_sections",
    "atoken.core.runconfig": "atoken.engine.runconfig",
    "atoken.core.runconfig_legacy": "atoken.engine.runconfig_legacy",
    "atoken.core.optim": "atoken.engine.optim",
    "atoken.core.checkpoint": "atoken.engine.checkpoint",
    "atoken.core.device": "atoken.engine.device",
    "atoken.core.progress": "atoken.engine.progress",
    "atoken.core.prefetch": "atoken.engine.prefetch",
    "atoken.core.train_task": "atoken.engine.train_task",
    "atoken.core.dcp_format": "atoken.engine.dcp_format",
    # the stage transforms and the run plan joined it
    "atoken.transforms": "atoken.engine.transforms",
    "atoken.pca_init": "atoken.engine.pca_init",
    "atoken.fsq_calibration": "atoken.engine.fsq_calibration",
    "atoken.plan": "atoken.engine.plan",
    "atoken.plan_formulas": "atoken.engine.plan_formulas",
    # the Fréchet distance went to the metrics that use it
    "atoken.core.frechet": "atoken.plugins.metrics.frechet",
    # the video family is one package (modalities/video/)
    "atoken.modalities.video_io": "atoken.data.video_io",
    "atoken.data.videos": "atoken.modalities.video.data",
    "atoken.tasks.video": "atoken.modalities.video.task",
    "atoken.tiling": "atoken.modalities.video.tiling",
    "atoken.viz_video": "atoken.modalities.video.viz",
    "atoken.plugins.metrics.video": "atoken.modalities.video.metrics",
    # so are the image and mesh families
    "atoken.tasks.image": "atoken.modalities.image.task",
    "atoken.tasks.mesh": "atoken.modalities.mesh.task",
    "atoken.data.meshes": "atoken.modalities.mesh.data",
    "atoken.data.mesh_cli": "atoken.modalities.mesh.cli",
    # the metric base is public (families build on it)
    "atoken.plugins.metrics._base": "atoken.plugins.metrics.base",
    # zarr storage moved to the data layer
    "atoken.core.storage": "atoken.data.storage",
    "atoken.core.store_lock": "atoken.data.store_lock",
    "atoken.core.ownership": "atoken.data.ownership",
    "atoken.core.latent_store": "atoken.data.latent_store",
    "atoken.core.latent_writer": "atoken.data.latent_writer",
    # the command line is one package, one module per command group
    "atoken.cli_checkpoint": "atoken.cli.checkpoint",
    "atoken.cli_classify": "atoken.cli.classify",
    "atoken.cli_common": "atoken.cli.common",
    "atoken.cli_convert": "atoken.cli.convert",
    "atoken.cli_data": "atoken.cli.data",
    "atoken.cli_distributed": "atoken.cli.distributed",
    "atoken.cli_encode": "atoken.cli.encode",
    "atoken.cli_files": "atoken.cli.files",
    "atoken.cli_plan": "atoken.cli.plan",
    "atoken.cli_report": "atoken.cli.report",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and loads it as the module at its new path."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}: import it from there (the old path goes in 1.0)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the module at the new path is already executed); the import
        machinery set the alias's spec on it, so its own spec is put back."""
        module.__spec__ = self._specs[module.__name__]


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (first, so an old path never finds a file)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())


install()
