"""``atoken train RUN.toml --plan``: parameters exact, FLOPs against torch's counter, memory
against the measured peak of short CPU runs, nothing launched (#29 item 3)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from atoken.cli import main
from atoken.core.config import load_preset, preset_names
from atoken.core.errors import ConfigError, UnknownComponentError
from atoken.engine.plan import plan_run
from atoken.engine.plan_formulas import training_flops
from atoken.engine.runconfig import load_run_file
from atoken.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
HEAD = """
[run]
out_dir = "{out}"
[model]
preset = "{preset}"
latent_dim = {latent}
[train]
steps = 3
precision = "{precision}"
progress = false
"""
PHOTOS = """
[[tasks]]
name = "image_reconstruction"
data = {{ source = "photos", batch_size = {batch}, crop_min = {side}, crop_max = {side} }}
losses = [{{ name = "l1", weight = 0.2 }}, {{ name = "kl", weight = 1e-8 }}]
metrics = []
previews = 0
"""


def _run_file(tmp_path: Path, *, preset="tiny", batch=8, side=256, precision="fp32", extra=""):
    latent = load_preset(preset).latent_dim
    text = HEAD.format(out=tmp_path / "run", preset=preset, latent=latent, precision=precision)
    path = tmp_path / f"{preset}.toml"
    path.write_text(text + PHOTOS.format(batch=batch, side=side) + extra)
    return path


@pytest.mark.parametrize("preset", preset_names())
def test_planned_parameters_are_the_built_models(tmp_path, preset):
    """Exact, for every preset: the plan's meta build against a real build's sum(numel)."""
    plan = plan_run(load_run_file(_run_file(tmp_path, preset=preset)))
    model = Tokenizer.from_preset(preset)
    assert plan.stages[0].trainable == sum(p.numel() for p in model.parameters())
    assert plan.stages[0].frozen == 0
    del model
    gc.collect()


def test_stage_transforms_change_the_plan_as_they_change_the_model(tmp_path):
    """expand_latent and to_fsq (uniform levels, and bits allocated on calibration samples)
    planned on the meta device give the parameters the real transforms leave."""
    from atoken.engine.transforms import expand_latent, to_fsq

    stages = """
[[stages]]
name = "a"
steps = 1
tasks = ["image_reconstruction"]
[[stages]]
name = "b"
steps = 1
tasks = ["image_reconstruction"]
transforms = [{ name = "expand_latent", latent_dim = 48 }]
[[stages]]
name = "c"
steps = 1
tasks = ["image_reconstruction"]
transforms = [{ name = "to_fsq", groups = 8, bits = 96, calibrate = 1 }]
"""
    path = _run_file(tmp_path, extra=stages)
    path.write_text(path.read_text().replace("steps = 3\n", ""))
    plan = plan_run(load_run_file(path))
    model = Tokenizer.from_preset("tiny")
    counts = [sum(p.numel() for p in model.parameters())]
    expand_latent(model, 48)
    counts.append(sum(p.numel() for p in model.parameters()))
    images = [torch.rand(3, 64, 64) for _ in range(4)]
    to_fsq(model, groups=8, bits=96, calibration=[(images, "image")])
    counts.append(sum(p.numel() for p in model.parameters()))
    assert [s.trainable for s in plan.stages] == counts
    assert counts[0] < counts[1] and counts[2] != counts[1]  # the check is not vacuous
    assert not plan.notes


def _peak_rss_after(fn) -> int:
    """Bytes the peak resident set (VmHWM, reset first) grows by while ``fn()`` runs."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs Linux's /proc/self/status")
    Path("/proc/self/clear_refs").write_text("5")
    before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    fn()
    peak = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
    return int(peak.split()[1]) * 1024 - before


def test_a_so400m_plan_allocates_nothing(tmp_path):
    """The so400m model is built on the meta device: the plan's process does not grow by
    its 3.4 GB of weights."""
    cfg = load_run_file(_run_file(tmp_path, preset="so400m"))
    plans = [plan_run(cfg, nproc=2)]  # imports and registries warm
    grown = _peak_rss_after(lambda: plans.append(plan_run(cfg, nproc=256)))
    assert plans[-1].stages[0].trainable > 800_000_000
    assert grown < 200 * 2**20


def test_memory_per_rank_follows_the_strategy_and_the_ranks(tmp_path):
    cfg = load_run_file(_run_file(tmp_path, preset="small"))
    one, many = plan_run(cfg, nproc=1).stages[0], plan_run(cfg, nproc=8).stages[0]
    P = one.trainable
    assert one.ddp.parameters == many.ddp.parameters == 4 * P
    assert many.fsdp.parameters == 4 * -(-P // 8)
    assert many.fsdp.optimizer == 2 * many.fsdp.parameters == 8 * -(-P // 8)
    assert many.fsdp.activations < many.ddp.activations  # FSDP2 computes in bf16 (auto)
    fp32 = _run_file(tmp_path, preset="small", extra='[distributed]\nparam_dtype = "fp32"\n')
    fsdp32 = plan_run(load_run_file(fp32), nproc=8).stages[0].fsdp
    assert fsdp32.activations == many.ddp.activations  # a rank's micro-batch either way
    assert many.fsdp.total < many.ddp.total
    assert many.samples_per_step == 8 * one.samples_per_step == 64
    assert many.tokens_per_step == 8 * 8 * 256
    assert many.flops_per_step == pytest.approx(8 * one.flops_per_step)
    checkpointed = _run_file(tmp_path, preset="small", extra="[distributed]\n"
                             "activation_checkpointing = true\n")  # fmt: skip
    assert plan_run(load_run_file(checkpointed)).stages[0].ddp.activations < one.ddp.activations
    bf16 = plan_run(load_run_file(_run_file(tmp_path, preset="small", precision="bf16")))
    assert bf16.bf16 and bf16.stages[0].ddp.activations < one.ddp.activations


@pytest.mark.parametrize(("preset", "side"), [("tiny", 128), ("tiny", 256), ("small", 512)])
def test_model_flops_agree_with_torch_flop_counter(preset, side):
    """One sample (the math backend's attention is then the sample's own): the counted
    matmul FLOPs of a forward and backward pass against the formula, within 3%."""
    from torch.utils.flop_counter import FlopCounterMode

    model = Tokenizer.from_preset(preset)
    model.train()
    model.set_attention_backend("math")
    image = torch.rand(3, side, side)
    with FlopCounterMode(display=False) as counter:
        out = model(model.prepare([image], "image"))
        (out.samples[0] - image).abs().mean().backward()
    n = (side // 16) ** 2
    planned = training_flops(model, n, n * n, modality="image", decode=True)
    assert planned == pytest.approx(counter.get_total_flops(), rel=0.03)


_MEASURE = textwrap.dedent(
    """
    import json, sys
    import torch
    sys.path.insert(0, {bench!r})
    from _memory import peak_rss_bytes, reset_peak_rss, rss_bytes
    from atoken.engine.runconfig import load_run_file
    from atoken.engine.trainer import Trainer
    from atoken.plugins.manager import get_plugin_manager
    from atoken.train import build_run

    torch.set_num_threads(2)
    cfg = load_run_file({path!r})
    _, mixture = build_run(cfg)  # the model's weights and the data: before the baseline
    before = rss_bytes()
    reset_peak_rss()
    trainer = Trainer(cfg, mixture, hooks=get_plugin_manager().hook, device="cpu")
    for _ in range(2):  # the second step: AdamW's state exists
        trainer.train_step()
    print(json.dumps({{"grown": peak_rss_bytes() - before}}))
    """
)


@pytest.mark.parametrize(("preset", "batch", "side"), [("tiny", 8, 256), ("small", 4, 256)])
def test_planned_memory_is_within_30_percent_of_a_measured_cpu_run(tmp_path, preset, batch, side):
    """Two training steps in a fresh process: the growth of its peak resident set after the
    model is built (the EMA, gradients, AdamW state and activations) against the plan's
    memory per rank less the parameters."""
    path = _run_file(tmp_path, preset=preset, batch=batch, side=side)
    stage = plan_run(load_run_file(path)).stages[0]
    planned = stage.ddp.total - stage.ddp.parameters
    script = _MEASURE.format(bench=str(ROOT / "benchmarks"), path=str(path))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown = json.loads(done.stdout.strip().splitlines()[-1])["grown"]
    assert abs(planned - grown) <= 0.3 * grown, (planned / 2**20, grown / 2**20)


def test_plan_cli_prints_the_tables_and_launches_nothing(tmp_path, monkeypatch):
    import atoken.cli.distributed

    def no_launch(*args, **kwargs):
        raise AssertionError("--plan launched torchrun")

    monkeypatch.setattr(atoken.cli.distributed, "launch", no_launch)
    path = _run_file(tmp_path)
    result = CliRunner().invoke(main, ["train", str(path), "--plan", "--nproc", "64"])
    assert result.exit_code == 0, result.output
    out = result.output
    for heading in ("stages (per optimizer step", "tasks (per rank", "memory per rank (GB)"):
        assert heading in out
    assert "on 64 rank(s)" in out and "train DDP" in out and "train FSDP2" in out
    assert "512" in out  # 64 ranks x 8 samples a step
    assert not (tmp_path / "run").exists()  # nothing trained, no run folder


def test_plan_errors_are_typed_and_name_the_culprit(tmp_path):
    bad = _run_file(tmp_path, extra='[[stages]]\nname = "s"\nsteps = 3\n'
                    'tasks = ["image_reconstruction"]\n'
                    'transforms = [{ name = "expand_latnet", latent_dim = 48 }]\n')  # fmt: skip
    with pytest.raises(UnknownComponentError, match="expand_latnet"):
        plan_run(load_run_file(bad))
    result = CliRunner().invoke(main, ["train", str(bad), "--plan"])
    assert result.exit_code == 1 and "UnknownComponentError" in result.output
    unsized = tmp_path / "unsized.toml"
    unsized.write_text(
        HEAD.format(out=tmp_path / "u", preset="tiny", latent=32, precision="fp32")
        + '[[tasks]]\nlabel = "shards"\nname = "reconstruction"\nmodality = "image"\n'
        'data = { source = "not_installed_here", urls = "s3://b/x-{0..9}.tar" }\n'
    )
    with pytest.raises(ConfigError, match=r"\[\[tasks\]\] shards.*batch_size"):
        plan_run(load_run_file(unsized))
    with pytest.raises(ConfigError, match="nproc"):
        plan_run(load_run_file(_run_file(tmp_path)), nproc=0)


def test_a_source_not_installed_is_planned_from_its_table_and_named(tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text(
        HEAD.format(out=tmp_path / "e", preset="tiny", latent=32, precision="fp32")
        + '[[tasks]]\nlabel = "shards"\nname = "reconstruction"\nmodality = "image"\n'
        'data = { source = "not_installed_here", batch_size = 4, crop_max = 128 }\n'
    )
    plan = plan_run(load_run_file(path), nproc=2)
    task = plan.stages[0].tasks[0]
    assert (task.samples, task.tokens_max) == (4, 64)
    assert any("not_installed_here" in note for note in plan.notes)


def test_frozen_networks_are_counted_without_their_weights(tmp_path):
    """A frozen text tower and the networks of the losses count as frozen parameters, from
    their architectures (no weights here): each against a real build of the same network."""
    import open_clip

    from atoken.losses.lpips import LPIPSLoss
    from atoken.plugins.text_encoders.minilm import MiniLMTextEncoder

    extra = """
[[stages]]
name = "s"
steps = 3
[[stages.tasks]]
name = "image_reconstruction"
data = { source = "photos", batch_size = 2, crop_max = 64 }
losses = [
  { name = "l1", weight = 0.2 },
  { name = "lpips", weight = 2.0, params = { weights_path = "/nowhere/vgg16.pth" } },
  { name = "clip", weight = 0.2, params = { model_name = "ViT-S-32", pretrained = "/nowhere" } },
]
"""
    path = _run_file(tmp_path, extra=extra)
    text = path.read_text().replace(
        "latent_dim = 32\n", 'latent_dim = 32\ntext_encoder = "minilm"\n'
    )
    path.write_text(text.replace("steps = 3\n", "", 1))
    plan = plan_run(load_run_file(path))
    tower = MiniLMTextEncoder().load()
    lpips = LPIPSLoss(random_backbone_for_tests=True).network()
    clip = open_clip.create_model("ViT-S-32")
    expected = sum(sum(p.numel() for p in m.parameters()) for m in (tower, lpips, clip))
    assert plan.stages[0].frozen == expected
    model = Tokenizer.from_preset("tiny", text_encoder="minilm")  # the projection to 384-d
    assert plan.stages[0].trainable == sum(p.numel() for p in model.parameters())
    assert any("lpips, clip" in note for note in plan.notes)  # their activations: not counted
