"""The curriculum: ``[[stages]]`` in run files, stage transforms and stage-aware training.

Everything goes through what a user calls: ``load_run_file`` on TOML text, ``atoken train``
(the CLI), ``Tokenizer.from_pretrained`` on what the run saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.core.errors import ConfigError, UnknownComponentError
from atoken.engine.checkpoint import latest_checkpoint, load_checkpoint
from atoken.engine.runconfig import load_run_file
from atoken.train import build_transforms, run_training

HEAD = """
[run]
name = "stages"
out_dir = "{out}"
seed = 0

[model]
preset = "tiny"
latent_dim = 8
bottleneck_params = {{ init_logvar = -8.0 }}

[model.overrides]
depth = 1
decoder_depth = 1
final_norm = false
decoder_final_norm = false
decoder_bias = true

[optim]
lr = 1e-3
warmup_steps = 1

[train]
ema_decay = 0.9
log_every = 1
progress = false

[[tasks]]
label = "img"
name = "image_reconstruction"
data = {{ source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "mse", weight = 1.0 }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 0
"""

STAGES = """
[[stages]]
name = "image"
steps = 3
tasks = ["img"]
transforms = [{ name = "pca_init", batches = 2 }]

[[stages]]
name = "wide"
steps = 3
tasks = ["img"]
optim = { lr = 5e-4, warmup_steps = 2 }
transforms = [{ name = "expand_latent", latent_dim = 12 }]

[[stages]]
name = "fsq"
steps = 2
optim = { lr = 2e-4 }
transforms = [{ name = "to_fsq", levels = [4, 4, 4], groups = 4 }]

[[stages.tasks]]
label = "img_fsq"
name = "image_reconstruction"
data = { source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }
losses = [{ name = "mse", weight = 1.0 }]
metrics = ["psnr"]
previews = 0
"""


def _write(tmp_path: Path, body: str = STAGES, name: str = "run") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(HEAD.format(out=tmp_path / name) + body)
    return path


# ------------------------------------------------------------------------------ run files
def test_stages_resolve_labels_and_inline_tables(tmp_path):
    cfg = load_run_file(_write(tmp_path))
    names = [s.name for s in cfg.plan()]
    assert names == ["image", "wide", "fsq"]
    assert cfg.train.steps == 8  # the sum of the stages' steps
    assert cfg.stages[0].tasks[0] == cfg.tasks[0]  # "img" is the [[tasks]] table
    assert cfg.stages[2].tasks[0].key == "img_fsq"
    assert cfg.stages[1].transforms[0].params == {"latent_dim": 12}
    optim = cfg.stage_optim(cfg.stages[1])
    assert (optim.lr, optim.warmup_steps, optim.betas) == (5e-4, 2, cfg.optim.betas)


def test_a_run_without_stages_is_one_stage_with_the_model_start(tmp_path):
    cfg = load_run_file(_write(tmp_path, ""), model={"expand_latent": 12})
    (stage,) = cfg.plan()
    assert (stage.name, stage.steps, stage.tasks) == ("train", cfg.train.steps, cfg.tasks)
    assert [t.name for t in stage.transforms] == ["expand_latent"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('[[stages]]\nname = "a"\nsteps = 2\ntasks = ["nope"]\n', r"nope.*\['img'\]"),
        ('[[stages]]\nname = "a"\nsteps = 2\ntasks = []\n', "tasks is empty"),
        ('[[stages]]\nname = "a"\nsteps = 0\ntasks = ["img"]\n', "steps must be > 0"),
        ('[[stages]]\nname = "a b"\nsteps = 1\ntasks = ["img"]\n', "name must be"),
        ('[[stages]]\nname = "a"\nsteps = 1\ntasks = ["img"]\noptim = { lrr = 1 }\n', "lrr"),
        ('[[stages]]\nname = "a"\nsteps = 1\ntasks = ["img"]\nmixture = "x"\n', "mixture"),
        ('[[stages]]\nname = "a"\nsteps = 1\ntasks = ["img"]\nsteps_x = 1\n', "steps_x"),
        (
            '[[stages]]\nname = "a"\nsteps = 1\ntasks = ["img"]\n'
            '[[stages]]\nname = "a"\nsteps = 1\ntasks = ["img"]\n',
            "distinct",
        ),
    ],
)
def test_a_bad_stage_is_a_config_error_naming_it(tmp_path, body, match):
    with pytest.raises(ConfigError, match=match):
        load_run_file(_write(tmp_path, body))


def test_stages_refuse_the_model_start_keys_and_too_many_steps(tmp_path):
    path = _write(tmp_path)
    with pytest.raises(ConfigError, match="pca_init"):
        load_run_file(path, model={"pca_init": True})
    with pytest.raises(ConfigError, match="exceeds"):
        load_run_file(path, train={"steps": 9})
    assert load_run_file(path, train={"steps": 4}).train.steps == 4  # stops the run earlier


def test_transforms_are_checked_before_anything_trains(tmp_path):
    bad_name = STAGES.replace('"to_fsq"', '"to_fsk"')
    with pytest.raises(UnknownComponentError, match=r"transform in \[\[stages\]\] fsq.*to_fsq"):
        build_transforms(load_run_file(_write(tmp_path, bad_name)))
    bad_param = STAGES.replace("latent_dim = 12", "latent_dims = 12")
    with pytest.raises(ConfigError, match=r"'wide'.*expand_latent.*latent_dims"):
        build_transforms(load_run_file(_write(tmp_path, bad_param)))
    bad_value = STAGES.replace("groups = 4", "groups = 0")
    with pytest.raises(ConfigError, match="groups must be an int >= 1"):
        build_transforms(load_run_file(_write(tmp_path, bad_value)))


def _dry_run_fails(tmp_path: Path, body: str) -> str:
    """``atoken train`` on ``body``'s stages: the message it fails with before step 0."""
    result = CliRunner().invoke(main, ["train", str(_write(tmp_path, body))])
    assert result.exit_code != 0, result.output
    out = tmp_path / "run"
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
    return " ".join(result.output.split())


def test_a_transform_that_does_not_fit_the_stage_model_fails_before_step_0(tmp_path, monkeypatch):
    import atoken.train

    built = []
    real = atoken.train.build_transforms
    monkeypatch.setattr(atoken.train, "build_transforms", lambda cfg: built.append(1) or real(cfg))
    body = STAGES.replace("groups = 4", "groups = 3")  # 3 x 3 != the 12 channels of "wide"
    message = _dry_run_fails(tmp_path, body)
    assert "[[stages]] fsq / to_fsq: 3 groups x 3 levels = 9 channels, the latent has 12" in message
    assert len(built) == 1  # every stage's transforms built once, before anything trained


def test_a_kl_loss_after_to_fsq_fails_before_step_0_naming_stage_and_task(tmp_path):
    body = STAGES.replace(
        'losses = [{ name = "mse", weight = 1.0 }]',
        'losses = [{ name = "mse", weight = 1.0 }, { name = "kl", weight = 1e-8 }]',
    )
    message = _dry_run_fails(tmp_path, body)
    assert (
        "[[stages]] fsq / [[tasks]] img_fsq: loss 'kl' reads the bottleneck term 'kl', which "
        "the model's FSQBottleneck does not export"
    ) in message


def test_a_misspelt_metric_of_the_last_stage_fails_before_step_0(tmp_path):
    body = STAGES.replace('metrics = ["psnr"]', 'metrics = ["psrn"]')  # img_fsq's
    message = _dry_run_fails(tmp_path, body)
    assert "[[stages]] fsq / unknown metric in [[tasks]] img_fsq: 'psrn'" in message
    assert "Did you mean 'psnr'" in message


def test_the_stages_train_the_tasks_the_dry_run_built(tmp_path, monkeypatch):
    """Each stage's tasks are built once, before step 0, against its shape-only model."""
    import atoken.dry_run

    built = []
    real = atoken.dry_run.build_task

    def counting(spec, context):
        built.append((spec.key, str(next(context.model.parameters()).device)))
        return real(spec, context)

    monkeypatch.setattr(atoken.dry_run, "build_task", counting)
    body = STAGES.replace("steps = 3", "steps = 1").replace("steps = 2", "steps = 1")
    _train([str(_write(tmp_path, body))])
    assert built == [("img", "meta"), ("img", "meta"), ("img_fsq", "meta")]


# ------------------------------------------------------------------------------ training
def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["train", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def curriculum(tmp_path_factory):
    """The three-stage run trained through ``atoken train`` to the end."""
    tmp = tmp_path_factory.mktemp("curriculum")
    _train([str(_write(tmp))])
    return tmp / "run"


def test_atoken_train_runs_every_stage_and_writes_its_metrics(curriculum):
    for index, name in enumerate(["image", "wide", "fsq"]):
        saved = json.loads((curriculum / "stages" / name / "metrics.json").read_text())
        assert (saved["stage"], saved["index"], saved["complete"]) == (name, index, True)
        assert saved["step"] == [3, 6, 8][index]
        task = "img_fsq" if name == "fsq" else "img"
        assert saved["metrics"][f"{task}/psnr"] > 5
    records = _records(curriculum)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["stage"] for r in train] == ["image"] * 3 + ["wide"] * 3 + ["fsq"] * 2
    evals = [r for r in records if r["kind"] == "eval"]
    assert [(r["step"], r["stage"]) for r in evals] == [(3, "image"), (6, "wide"), (8, "fsq")]
    assert "img_fsq/codebook_usage" in evals[-1]


def test_each_stage_warms_up_with_its_own_optimizer(curriculum):
    lrs = {r["step"]: r["lr"] for r in _records(curriculum) if r["kind"] == "train"}
    assert lrs[4] == pytest.approx(5e-4 / 2)  # first step of "wide": warmup 1/2 of its lr
    assert lrs[5] == pytest.approx(5e-4)
    assert lrs[7] == pytest.approx(2e-4)  # "fsq": warmup_steps = 1 from [optim]


def test_the_saved_tokenizers_are_each_stages_model(curriculum):
    shapes = {}
    for name in ["image", "wide", "fsq"]:
        tok = atoken.Tokenizer.from_pretrained(curriculum / "stages" / name / "tokenizer")
        shapes[name] = (tok.config.bottleneck, tok.config.latent_dim)
    assert shapes == {"image": ("kl", 8), "wide": ("kl", 12), "fsq": ("fsq", 12)}
    final = atoken.Tokenizer.from_pretrained(curriculum / "tokenizer")
    tokens = final.tokenize([torch.rand(3, 32, 32)])
    assert tokens.ids.shape == (4, 4)  # 2 x 2 patches, 4 FSQ groups per token
    assert int(tokens.ids.max()) < 4**3
    assert final.detokenize(tokens)[0].shape == (3, 32, 32)


def test_checkpoints_record_the_stage(curriculum):
    state = load_checkpoint(latest_checkpoint(curriculum / "checkpoints"))
    assert (state["stage"], state["stage_name"], state["step"]) == (2, "fsq", 8)


def test_a_resumed_run_lands_in_its_stage_and_matches_one_that_never_stopped(curriculum, tmp_path):
    path = _write(tmp_path, name="resumed")
    _train([str(path), "--steps", "5"])  # stops inside "wide"
    state = load_checkpoint(latest_checkpoint(tmp_path / "resumed" / "checkpoints"))
    assert (state["stage_name"], state["step"]) == ("wide", 5)
    _train([str(path), "--resume"])
    full = [r["loss"] for r in _records(curriculum) if r["kind"] == "train"]
    resumed = [r["loss"] for r in _records(tmp_path / "resumed") if r["kind"] == "train"]
    assert len(resumed) == 8
    assert resumed == pytest.approx(full, rel=1e-5, abs=1e-7)
    done = json.loads((tmp_path / "resumed" / "stages" / "fsq" / "metrics.json").read_text())
    assert done["complete"]


def test_a_checkpoint_of_a_stage_the_run_file_lacks_is_refused(curriculum, tmp_path):
    from atoken.engine.checkpoint import CheckpointError

    short = STAGES.split('[[stages]]\nname = "fsq"')[0]
    cfg = load_run_file(_write(tmp_path, short, name="short"))
    import shutil

    shutil.copytree(curriculum / "checkpoints", tmp_path / "short" / "checkpoints")
    with pytest.raises(CheckpointError, match="stage 2"):
        run_training(cfg, resume=True, force=True)


# ------------------------------------------------------------------------------ plugins
def test_a_plugins_stage_transform_and_stage_end_hook_run_through_atoken_train(tmp_path):
    """A third party adds a transform (registered by name, used in a run file) and watches
    the stages end, with no change to atoken."""
    import attrs

    from atoken.testing import registered_plugin

    seen = []

    @attrs.frozen
    class ScaleHead:
        factor: float = 0.5

        @torch.no_grad()
        def __call__(self, tokenizer, context):
            seen.append(("transform", context.stage.name, context.index, len(context.tasks)))
            tokenizer.head.proj.weight.mul_(self.factor)

    class Plugin:
        @atoken.hookimpl
        def register_stage_transforms(self, register):
            register("scale_head", ScaleHead)

        @atoken.hookimpl
        def atoken_stage_end(self, trainer, stage, metrics):
            seen.append(("end", stage, trainer.step, sorted(metrics)))

    body = (
        '[[stages]]\nname = "one"\nsteps = 2\ntasks = ["img"]\n'
        '[[stages]]\nname = "two"\nsteps = 1\ntasks = ["img"]\n'
        'transforms = [{ name = "scale_head", factor = 0.25 }]\n'
    )
    with registered_plugin(Plugin(), name="scaler"):
        _train([str(_write(tmp_path, body))])
    assert seen == [
        ("end", "one", 2, ["img/psnr"]),
        ("transform", "two", 1, 1),
        ("end", "two", 3, ["img/psnr"]),
    ]


def test_a_checkpoint_from_before_stages_existed_resumes_without_force(tmp_path):
    """Keys added to the run-file schema since a checkpoint was written count as unchanged
    when the run file leaves them at their default."""
    from atoken.engine.run_changes import config_changes

    cfg = load_run_file(_write(tmp_path, ""))
    old = cfg.to_dict()
    del old["stages"], old["distributed"]
    assert config_changes(json.dumps(old), cfg) == []
    old["optim"]["lr"] = 0.5
    assert config_changes(json.dumps(old), cfg) == ["optim.lr: 0.5 -> 0.001"]
