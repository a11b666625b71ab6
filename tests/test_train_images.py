"""Image training from a run file, through the CLI, with exact resume on the real task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from atoken import ConfigError, UnknownComponentError
from atoken.cli import main
from atoken.engine.runconfig import load_run_file
from atoken.train import run_training

RUN = """
[run]
name = "t"
out_dir = "{out}"
seed = 1

[model]
preset = "tiny"
latent_dim = 32
overrides = {{ depth = 1, decoder_depth = 1 }}

[optim]
lr = 1e-3
warmup_steps = 2

[train]
steps = {steps}
precision = "fp32"
ema_decay = 0.9
checkpoint_every = 2
log_every = 1
progress = false

[[tasks]]
name = "image_reconstruction"
losses = [{{ name = "{loss}", weight = 1.0 }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr", "ssim"]
previews = 1

[tasks.data]
source = "image_folder"
path = "{source}"
batch_size = 2
crop_min = 32
crop_max = 48
{heldout}
"""


@pytest.fixture
def folder(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(3):
        array = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(root / f"img{i}.png")
    return root


def _run_file(
    tmp_path: Path, folder: Path, name: str, steps: int = 4, loss: str = "l1", heldout: str = ""
) -> Path:
    path = tmp_path / f"{name}.toml"
    held = f"heldout = [{heldout!r}]" if heldout else ""
    text = RUN.format(out=tmp_path / name, source=folder, steps=steps, loss=loss, heldout=held)
    path.write_text(text.replace("'", '"'))
    return path


def test_real_task_resume_is_exact(tmp_path, folder):
    full, _ = run_training(load_run_file(_run_file(tmp_path, folder, "full")))
    cut_file = _run_file(tmp_path, folder, "cut")
    run_training(load_run_file(cut_file, train={"steps": 4, "checkpoint_every": 2}))
    # drop the last checkpoint: as if the run had died after step 2
    ckpts = sorted((tmp_path / "cut" / "checkpoints").glob("step_*.pt"))
    ckpts[-1].unlink()
    resumed, _ = run_training(load_run_file(cut_file), resume=True)
    assert resumed.losses == full.losses


def test_cli_train_reconstruct_eval(tmp_path, folder):
    runner = CliRunner()
    run_file = _run_file(tmp_path, folder, "cli", steps=3)
    result = runner.invoke(main, ["train", str(run_file)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "cli"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert {r["kind"] for r in records} == {"train", "eval"}
    assert "image_reconstruction/psnr" in records[-1]
    assert list((run_dir / "image_reconstruction").glob("recon_step*.png"))
    assert (run_dir / "tokenizer" / "model.safetensors").exists()

    out = tmp_path / "recon"
    result = runner.invoke(
        main,
        ["reconstruct", "--checkpoint", str(run_dir), "--out", str(out), str(folder / "img0.png")],
    )
    assert result.exit_code == 0, result.output
    assert (out / "img0_recon.png").exists() and (out / "img0_side_by_side.png").exists()
    assert Image.open(out / "img0_recon.png").size == (80, 64)

    result = runner.invoke(
        main, ["eval", "--checkpoint", str(run_dir), "--data", str(folder), "--metrics", "psnr"]
    )
    assert result.exit_code == 0, result.output
    assert "psnr" in result.output

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = runner.invoke(
        main, ["reconstruct", "--checkpoint", str(run_dir), "--out", str(out), str(bad)]
    )
    assert result.exit_code == 1 and "ModalityInputError" in result.output


def test_unknown_component_in_run_file(tmp_path, folder):
    cfg = load_run_file(_run_file(tmp_path, folder, "bad", loss="l2"))
    with pytest.raises(UnknownComponentError, match="'l1'"):
        run_training(cfg)
    result = CliRunner().invoke(
        main, ["train", str(_run_file(tmp_path, folder, "bad2", loss="l2"))]
    )
    assert (
        result.exit_code == 1
        and "unknown loss in [[tasks]] image_reconstruction: 'l2'" in result.output
    )


def test_fsq_run_reports_codebook_usage(tmp_path, folder):
    from atoken.engine.runconfig import RunConfig, structure

    data = {
        "run": {"out_dir": str(tmp_path / "fsq")},
        "model": {
            "bottleneck": "fsq",
            "latent_dim": 24,
            "overrides": {"depth": 1, "decoder_depth": 1},
            "bottleneck_params": {"levels": [4, 4, 4], "groups": 8},
        },
        "train": {"steps": 2, "progress": False, "precision": "fp32"},
        "tasks": [
            {
                "name": "image_reconstruction",
                "label": "img",
                "data": {"source": "image_folder", "path": str(folder), "batch_size": 2},
                "losses": [{"name": "l1"}],  # FSQ exports no kl term
            }
        ],
    }
    _, metrics = run_training(structure(RunConfig, data, "test"))
    assert 0 < metrics["img/codebook_usage"] <= 1 and metrics["img/codebook_perplexity"] >= 1


def test_folder_heldout_names_must_exist(tmp_path, folder):
    cfg = load_run_file(_run_file(tmp_path, folder, "h", heldout="nope.png"))
    with pytest.raises(ConfigError, match=r"nope\.png"):
        run_training(cfg)
    task_cfg = load_run_file(_run_file(tmp_path, folder, "h2", heldout="img1.png"))
    from atoken.train import build_run

    _, mixture = build_run(task_cfg)
    source = mixture.tasks[0].source
    assert source.heldout_names == ("img1.png",) and len(source.sampler.items) == 2


def test_cli_train_runs_on_the_device_it_is_told(tmp_path, folder, monkeypatch):
    import torch

    from atoken.engine import trainer as trainer_module

    seen = []
    original = trainer_module.Trainer.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.device)

    monkeypatch.setattr(trainer_module.Trainer, "__init__", spy)
    run_file = _run_file(tmp_path, folder, "dev", steps=1)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(run_file), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen == [torch.device("cpu")]
    result = runner.invoke(main, ["train", str(run_file), "--device", "cuda"])
    if not torch.cuda.is_available():  # a typed error naming the key, not a crash
        assert result.exit_code == 1 and "CUDA is not available" in result.output
    result = runner.invoke(main, ["train", str(run_file), "--device", "tpu"])
    assert result.exit_code == 1 and "[train] device" in result.output


def test_auto_device_is_cuda_when_present(monkeypatch):
    import torch

    from atoken.engine.trainer import resolve_device

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
