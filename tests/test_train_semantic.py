"""Joint training for reconstruction and text alignment on real captioned digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoken.core.errors import ConfigError
from atoken.core.runconfig import load_run_file
from atoken.semantic_train import SemanticTask
from atoken.tokenizer import Tokenizer
from atoken.train import build_tokenizer, run_training

RUN_FILE = Path(__file__).resolve().parents[1] / "configs" / "understanding.toml"


def _cfg(tmp_path, **sections):
    base = {
        "run": {"out_dir": str(tmp_path / "run")},
        "data": {"digit_size": 32, "digit_classes": [0, 3, 6], "batch_size": 16},
        "train": {"steps": 100, "progress": False},
        "optim": {"warmup_steps": 10},
        "eval": {"metrics": ["psnr", "zeroshot", "retrieval"]},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return load_run_file(RUN_FILE, **base)


def test_run_file_parses_the_paper_weights_and_semantic_terms():
    cfg = load_run_file(RUN_FILE)
    assert (cfg.loss.rec_weight, cfg.loss.sem_weight, cfg.loss.kl_weight) == (0.2, 1.0, 1e-8)
    assert [t.name for t in cfg.loss.semantic] == ["siglip"]
    assert cfg.model.text_encoder == "minilm" and cfg.data.source == "digits"


def test_unknown_semantic_key_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[loss.semantic]]\nname = "siglip"\nwieght = 1.0\n')
    with pytest.raises(ConfigError, match="wieght"):
        load_run_file(bad)


def test_semantic_task_needs_a_text_encoder_and_captioned_data(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ConfigError, match="text_encoder"):
        SemanticTask(cfg, Tokenizer.from_preset("tiny"))
    photos = _cfg(tmp_path, data={"source": "photos"})
    with pytest.raises(ConfigError, match="digits"):
        SemanticTask(photos, build_tokenizer(photos))


@pytest.mark.slow
def test_joint_training_beats_chance_at_zero_shot(tmp_path):
    cfg = _cfg(tmp_path)
    trainer, metrics = run_training(cfg)
    assert trainer.step == 100
    # Three classes: chance is 1/3. Aligned to the frozen MiniLM, held-out accuracy is far above.
    assert metrics["zeroshot_top1"] > 0.6, metrics
    assert metrics["i2t_r1"] == metrics["zeroshot_top1"]  # class captions: the same ranking
    assert metrics["psnr"] > 12.0, metrics  # the latent still reconstructs
    saved = Tokenizer.from_pretrained(tmp_path / "run" / "tokenizer")
    assert saved.config.text_encoder == "minilm"
    assert float(saved.semantic.logit_scale.detach()) != pytest.approx(2.302585, abs=1e-4)
