"""Joint training for reconstruction and text alignment on real captioned digits."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import tomllib

from atoken.core.errors import ConfigError
from atoken.engine.runconfig import RunConfig, load_run_file, structure
from atoken.tokenizer import Tokenizer
from atoken.train import build_run, run_training

RUN_FILE = Path(__file__).resolve().parents[1] / "configs" / "understanding.toml"


def _cfg(tmp_path, data=None, model=None) -> RunConfig:
    raw = tomllib.loads(RUN_FILE.read_text())
    raw["run"]["out_dir"] = str(tmp_path / "run")
    raw["train"].update(steps=100, progress=False)
    raw["optim"]["warmup_steps"] = 10
    raw["model"].update(model or {})
    task = raw["tasks"][0]
    task["metrics"] = ["psnr", "zeroshot", "retrieval"]
    task["data"].update({"size": 32, "classes": [0, 3, 6], "batch_size": 16, **(data or {})})
    if task["data"]["source"] != "digits":
        task["data"] = dict(data)
    return structure(RunConfig, raw, "test")


def test_run_file_parses_the_paper_weights_and_semantic_terms():
    cfg = load_run_file(RUN_FILE)
    (task,) = cfg.tasks
    weights = {t.name: t.weight for t in task.losses}
    assert weights == {"l1": 0.2, "mse": 0.2, "siglip": 1.0, "kl": 1e-8}
    assert cfg.model.get("text_encoder") == "minilm" and task.data["source"] == "digits"


def test_unknown_loss_key_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[tasks]]\nname = "text_alignment"\nlosses = [{ name = "siglip", wieght = 1.0 }]\n'
    )
    with pytest.raises(ConfigError, match="wieght"):
        load_run_file(bad)


def test_alignment_task_needs_a_text_encoder_and_captioned_data(tmp_path):
    with pytest.raises(ConfigError, match="text_encoder"):
        build_run(_cfg(tmp_path, model={"text_encoder": ""}))
    with pytest.raises(ConfigError, match="captioned"):
        build_run(_cfg(tmp_path, data={"source": "photos"}))


def test_embedding_losses_need_a_task_that_provides_embeddings(tmp_path):
    cfg = _cfg(tmp_path)
    image = attrs.evolve(cfg.tasks[0], name="image_reconstruction", data={"source": "photos"})
    with pytest.raises(ConfigError, match=r"siglip.*embeddings"):
        build_run(attrs.evolve(cfg, tasks=(image,)))


@pytest.mark.slow
def test_joint_training_beats_chance_at_zero_shot(tmp_path):
    cfg = _cfg(tmp_path)
    trainer, metrics = run_training(cfg)
    assert trainer.step == 100
    # Three classes: chance is 1/3. Aligned to the frozen MiniLM, held-out accuracy is far above.
    metrics = {k.removeprefix("text_alignment/"): v for k, v in metrics.items()}
    assert metrics["zeroshot_top1"] > 0.6, metrics
    assert metrics["i2t_r1"] == metrics["zeroshot_top1"]  # class captions: the same ranking
    assert metrics["psnr"] > 12.0, metrics  # the latent still reconstructs
    saved = Tokenizer.from_pretrained(tmp_path / "run" / "tokenizer")
    assert saved.config.text_encoder == "minilm"
    assert float(saved.semantic.logit_scale.detach()) != pytest.approx(2.302585, abs=1e-4)
