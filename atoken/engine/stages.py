"""The stages of a run on its global step axis, and what a stage that ends leaves.

Stage ``i`` of ``cfg.plan()`` trains global steps ``[starts[i], starts[i + 1])``, cut at
``[train] steps``, with its ``[optim]`` overrides: the learning rate warms up and anneals
within each stage. The trainer (:class:`atoken.engine.trainer.Trainer`) enters stage ``i`` > 0
through its ``enter_stage(i, model)``: ``model`` is a plain module with the weights the last
stage exported (the EMA when enabled; under FSDP2 an unsharded copy with the gathered weights
on every rank), which the stage's transforms change, in place or anew; the trainer then wraps
(shards) the returned task's model again and rebuilds the optimizer and the EMA. A stage that
ends is evaluated and checkpointed (the checkpoint records the stage), and its
record written to ``out_dir/stages/<name>/metrics.json``, with the tokenizer when the model
can ``save_pretrained`` (:meth:`Stages.write`). When the last one ends, the run's tokenizer
(:meth:`Stages.export`) is written with the final checkpoint, before the final evaluation.

    stages = Stages(cfg, dist, can_enter=True)
    stages.plan[i], stages.starts[i]      stage i and its first step (starts[-1]: the plan's end)
    stages.end(i)                         the step after its last one in this run
    stages.show(i, progress, step)        the progress bar (or lines) of stage i, at ``step``
    stages.write(i, done, metrics, model) what it leaves after ``done`` steps (rank 0 writes)
    stages.export(model)                  the run's tokenizer, ``out_dir/tokenizer``
"""

from __future__ import annotations

from typing import Any

from torch import nn

from atoken.core.errors import ConfigError
from atoken.engine.distributed import Dist, on_main
from atoken.engine.progress import Progress
from atoken.engine.run_folder import write_stage, write_tokenizer
from atoken.engine.runconfig import RunConfig
from atoken.plugins.metrics.base import split_failures

__all__ = ["Stages"]


class Stages:
    """Where the stages of ``cfg`` (``cfg.plan()``) lie on the run's steps; ``dist``: the
    ranks training them (rank 0 writes what a stage leaves).

    Raises:
        ConfigError: the run has more than one stage and no way to enter them
            (``can_enter`` false: the trainer got no ``enter_stage``).
    """

    def __init__(self, cfg: RunConfig, dist: Dist, *, can_enter: bool) -> None:
        self.plan = cfg.plan()
        if len(self.plan) > 1 and not can_enter:
            raise ConfigError(
                f"the run has {len(self.plan)} [[stages]]: the Trainer needs enter_stage= "
                "to start each (atoken.train.run_training passes it)"
            )
        self.steps, self.out_dir, self.dist = cfg.train.steps, cfg.run.output, dist
        self.starts = [0]
        for stage in self.plan:
            self.starts.append(self.starts[-1] + stage.steps)

    def end(self, index: int) -> int:
        """The step after stage ``index``'s last in this run: the next stage's first, or the
        run's end (``[train] steps``) when that comes sooner."""
        return min(self.starts[index + 1], self.steps)

    def show(self, index: int, progress: Progress, step: int) -> None:
        """Show stage ``index`` on ``progress`` (its name, task mix and steps; the run is at
        ``step``): after a start, a switch or a resume."""
        stage = self.plan[index]
        mix = "+".join(t.key for t in stage.tasks)
        progress.stage(stage.name, mix, self.starts[index], self.end(index), step)

    def write(
        self, index: int, done: int, metrics: dict[str, float], model: nn.Module | None
    ) -> dict[str, Any]:
        """Write what stage ``index`` leaves after ``done`` steps (rank 0; an error there
        stops every rank): its record ``{stage, index, step, complete, metrics}`` and
        ``model``'s tokenizer (:func:`atoken.engine.run_folder.write_stage`). ``complete``
        unless the run stopped inside the stage (it ends after a resume); ``failed``: the
        reason of each metric that failed, when any did. Returns the record.
        """
        values, failed = split_failures(metrics)
        record = {"stage": self.plan[index].name, "index": index, "step": done}
        record = {**record, "complete": done == self.starts[index + 1], "metrics": values}
        record |= {"failed": failed} if failed else {}
        on_main(lambda: write_stage(self.out_dir, record, model), self.dist, "a stage's outputs")
        return record

    def export(self, model: nn.Module | None) -> None:
        """Write the run's tokenizer, ``model``'s ``save_pretrained`` folder
        ``out_dir/tokenizer`` (rank 0, which alone holds ``model`` under FSDP2; an error there
        stops every rank)."""
        on_main(lambda: write_tokenizer(self.out_dir, model), self.dist, "the run's tokenizer")
