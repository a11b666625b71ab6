"""Run-file key paths: dotted overrides and "did you mean" for a misspelt key
(atoken.engine.run_keys); the schedule a resume keeps (atoken.engine.run_changes)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoken.core.errors import ConfigError
from atoken.engine.optim import lr_at
from atoken.engine.run_changes import config_changes, keep_schedule
from atoken.engine.run_keys import OVERRIDE_ROOTS, parse_override, toml_value
from atoken.engine.runconfig import OptimConfig, RunConfig, load_run_file

RUN = """
[run]
name = "keys"

[optim]
lr = 1e-3

[[tasks]]
label = "img"
name = "image_reconstruction"
data = { source = "photos", batch_size = 2 }
losses = [{ name = "mse" }, { name = "kl", weight = 1e-8 }]
"""

STAGES = """
[[stages]]
name = "one"
steps = 3
tasks = ["img"]

[[stages]]
name = "two"
steps = 2
tasks = ["img"]
optim = { lr = 2e-4 }
"""


def _write(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(RUN + body)
    return path


# ------------------------------------------------------------------------------ overrides
@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("optim.lr=1e-4", ("optim", "lr"), 1e-4),
        ('distributed.strategy="fsdp"', ("distributed", "strategy"), "fsdp"),
        ("distributed.strategy=fsdp", ("distributed", "strategy"), "fsdp"),
        ("train.device=cuda:0", ("train", "device"), "cuda:0"),
        ("tasks.0.data.batch_size=4", ("tasks", "0", "data", "batch_size"), 4),
        ("optim.betas=[0.9, 0.99]", ("optim", "betas"), [0.9, 0.99]),
        ("train.progress = true", ("train", "progress"), True),
        ("run.name=", ("run", "name"), ""),
    ],
)
def test_an_override_is_a_key_path_and_a_toml_value(text, path, value):
    assert parse_override(text) == (path, value)


@pytest.mark.parametrize("text", ["optim.lr", "=1", "optim..lr=1", "optim.=1"])
def test_an_override_that_is_not_key_value_says_the_form(text):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(text)


_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@given(value=_values)
def test_a_value_written_as_toml_reads_back(value):
    assert parse_override(f"log.x={toml_value(value)}")[1] == value


def test_overrides_are_typed_and_validated_like_the_file(tmp_path):
    cfg = load_run_file(
        _write(tmp_path, STAGES),
        dotted=[
            "optim.lr=1e-4",
            "distributed.strategy=fsdp",
            "tasks.0.data.batch_size=4",
            "tasks.0.losses.1.weight=0",
            "stages.1.optim.lr=5e-5",
            "stages.0.steps=2",
            "train.checkpoint_every=2",
            "train.checkpoint_every=4",  # a later override wins
        ],
    )
    assert (cfg.optim.lr, cfg.distributed.strategy) == (1e-4, "fsdp")
    assert cfg.tasks[0].data["batch_size"] == 4 and cfg.tasks[0].losses[1].weight == 0
    assert cfg.stages[0].tasks[0] == cfg.tasks[0]  # the stage's label resolves after
    assert cfg.stage_optim(cfg.stages[1]).lr == 5e-5
    assert (cfg.stages[0].steps, cfg.train.steps, cfg.train.checkpoint_every) == (2, 4, 4)
    assert cfg.log == load_run_file(_write(tmp_path), dotted=["log.tensorboard=false"]).log


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("optim.lrr=1e-4", r"'lrr' in section \[optim\]; did you mean 'lr'\?"),
        ("optm.lr=1e-4", r"did you mean 'optim'\?"),
        ("train.step=5", r"did you mean 'steps'\?"),
        ("stages.0.stepz=1", r"did you mean 'steps'\?"),
        ("stages.0.optim.warmup_step=1", r"did you mean 'warmup_steps'\?"),
        ("tasks.3.data.batch_size=4", r"'3' is no index of tasks \(indexes 0 to 0\)"),
        ("tasks.img.data.batch_size=4", r"'img' is no index of tasks"),
        ("stages.0.tasks.0.weight=2", r"stages.0.tasks.0 is 'img', not a table"),
        ("optim.lr=fast", r"lr must be a finite number, got 'fast'"),
        ("tasks.0.losses.0.wieght=2", r"did you mean 'weight'\?"),
        ("model.latent_dims=8", r"'latent_dims'.*Did you mean 'latent_dim'"),
    ],
)
def test_a_bad_override_is_a_config_error_with_close_matches(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_run_file(_write(tmp_path, STAGES), dotted=[override])
    if override.split("=")[0] not in ("optim.lr", "tasks.0.losses.0.wieght", "model.latent_dims"):
        assert f"override {override!r}" in str(info.value)  # checked before structuring


def test_every_section_of_a_run_file_can_be_overridden():
    assert set(OVERRIDE_ROOTS) == {f.name for f in attrs.fields(RunConfig)}


def test_a_misspelt_section_key_in_a_file_gets_did_you_mean(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(RUN.replace("lr = 1e-3", "lr = 1e-3\nwarmup_step = 10"))
    with pytest.raises(ConfigError, match=r"'warmup_step' in section \[optim\]; did you mean "):
        load_run_file(path)


# ------------------------------------------------------------------------------ schedule
def _saved(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), default=str)


def test_the_schedule_spans_schedule_steps_when_set():
    optim = OptimConfig(lr=1.0, min_lr=0.0, warmup_steps=2)
    long = attrs.evolve(optim, schedule_steps=10)
    assert [lr_at(s, long, 4) for s in range(10)] == [lr_at(s, optim, 10) for s in range(10)]
    assert lr_at(12, long, 20) == 0.0  # past its end: min_lr


def test_a_resume_with_other_steps_keeps_the_checkpoints_schedule(tmp_path):
    path = _write(tmp_path)
    first = load_run_file(path, train={"steps": 4})
    longer = load_run_file(path, train={"steps": 8})
    kept = keep_schedule(_saved(first), longer)
    assert (kept.optim.schedule_steps, kept.train.steps) == (4, 8)
    assert keep_schedule(_saved(kept), load_run_file(path, train={"steps": 12})) == attrs.evolve(
        kept, train=attrs.evolve(kept.train, steps=12)
    )  # resumed twice: still the first length
    assert keep_schedule(_saved(first), first) is first
    asked = load_run_file(path, dotted=["train.steps=8", "optim.schedule_steps=8"])
    assert keep_schedule(_saved(first), asked) is asked  # --reschedule
    staged = load_run_file(_write(tmp_path, STAGES))
    assert keep_schedule(_saved(first), staged) is staged
    assert config_changes(_saved(first), kept) == []
