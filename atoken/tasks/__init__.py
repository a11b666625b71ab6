"""Training tasks: what a run file's ``[[tasks]]`` tables train, and their mixture.

Built-in tasks (registered through ``register_tasks`` like a plugin's): ``reconstruction``
(any modality, any source) and ``text_alignment`` here; ``image_reconstruction``,
``video_reconstruction`` and ``mesh_reconstruction`` live with their modality families
(``atoken.modalities.<family>.task``). A plugin task subclasses :class:`ReconstructionTask`.
"""

from atoken.tasks.alignment import TextAlignmentTask
from atoken.tasks.base import (
    ReconstructionParams,
    ReconstructionTask,
    Task,
    TaskContext,
    build_task,
    evaluate_samples,
    loss_inputs,
    tile_problem,
    tiles,
)
from atoken.tasks.mixture import TaskMixture

__all__ = [
    "ReconstructionParams",
    "ReconstructionTask",
    "Task",
    "TaskContext",
    "TaskMixture",
    "TextAlignmentTask",
    "build_task",
    "evaluate_samples",
    "loss_inputs",
    "tile_problem",
    "tiles",
]
