"""Training tasks: what a run file's ``[[tasks]]`` tables train, and their mixture.

Built-in tasks (registered through ``register_tasks`` like a plugin's): ``reconstruction``
(any modality, any source), ``image_reconstruction``, ``video_reconstruction`` and
``text_alignment``. A plugin task subclasses :class:`ReconstructionTask`.
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
    tiles,
)
from atoken.tasks.image import ImageReconstructionTask
from atoken.tasks.mixture import TaskMixture
from atoken.tasks.video import VideoReconstructionTask

__all__ = [
    "ImageReconstructionTask",
    "ReconstructionParams",
    "ReconstructionTask",
    "Task",
    "TaskContext",
    "TaskMixture",
    "TextAlignmentTask",
    "VideoReconstructionTask",
    "build_task",
    "evaluate_samples",
    "loss_inputs",
    "tiles",
]
