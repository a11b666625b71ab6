"""The training engine: everything that turns a run file into a trained tokenizer, and knows
no modality, task or loss.

* the run file: :mod:`~atoken.engine.runconfig` (``load_run_file``, ``RunConfig``), its
  sections (:mod:`~atoken.engine.run_sections`), dotted command-line overrides
  (:mod:`~atoken.engine.run_keys`), the pre-0.2 layout
  (:mod:`~atoken.engine.runconfig_legacy`), what changed on resume
  (:mod:`~atoken.engine.run_changes`);
* the loop: :mod:`~atoken.engine.trainer` (``Trainer``), its state and resume
  (:mod:`~atoken.engine.trainer_state`), the stages on the step axis
  (:mod:`~atoken.engine.stages`), a stage's model, EMA and gradients on the ranks
  (:mod:`~atoken.engine.stage_model`), why a run stops early
  (:mod:`~atoken.engine.stop_conditions`), the task step (:mod:`~atoken.engine.train_task`),
  optimizers (:mod:`~atoken.engine.optim`), why a step was non-finite
  (:mod:`~atoken.engine.nonfinite`), devices and precision
  (:mod:`~atoken.engine.device`), progress (:mod:`~atoken.engine.progress`), batches computed
  ahead by worker processes (:mod:`~atoken.engine.prefetch`);
* many processes: :mod:`~atoken.engine.distributed` (torchrun, DDP, FSDP2),
  :mod:`~atoken.engine.sharded`;
* checkpoints and run folders: :mod:`~atoken.engine.checkpoint` (full),
  :mod:`~atoken.engine.sharded_checkpoint` and :mod:`~atoken.engine.dcp_format` (sharded,
  never unpickled), :mod:`~atoken.engine.run_folder`;
* the curriculum: the stage transforms (:mod:`~atoken.engine.transforms`,
  :mod:`~atoken.engine.pca_init`, :mod:`~atoken.engine.fsq_calibration`) and the run plan
  (:mod:`~atoken.engine.plan`, :mod:`~atoken.engine.plan_formulas`).

The engine imports the model (``atoken.core``) and the data layer; the model imports nothing
of the engine (``tests/test_layering.py``). Every module here was importable from its old
path (``atoken.core.trainer``, ``atoken.transforms``, ...), which still works with a
``DeprecationWarning`` (:mod:`atoken.moved`).
"""
