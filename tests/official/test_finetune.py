"""``configs/finetune_official.toml`` trains a converted official checkpoint through
``atoken train``: the test converts a small random official-shaped checkpoint it makes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.engine.runconfig import load_run_file
from atoken.testing.official import official_state_dict, write_official_checkpoint

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "finetune_official.toml"


def test_the_run_file_has_the_papers_encoder_lr_multiplier():
    cfg = load_run_file(RUN)
    assert cfg.model.init_from == "converted/atoken-soc"
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.encoder_lr_mult) == (3e-4, 3e-5, 0.1)
    assert tuple(cfg.optim.betas) == (0.9, 0.95) and cfg.optim.weight_decay == 0.1


def test_atoken_train_fine_tunes_a_converted_checkpoint(tmp_path):
    state = official_state_dict(width=32, heads=1, depth=1, mlp=48, latent=48, seed=2)
    ckpt = write_official_checkpoint(tmp_path / "atoken-soc.safetensors", state)
    converted = tmp_path / "converted"
    # 32 wide / 1 head: head dimension 32, a multiple of 8 as 4D RoPE needs
    args = ["convert", "official", str(ckpt), str(converted), "--heads", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = re.sub(r'(?m)^init_from = "[^"]*"', f'init_from = "{converted}"', RUN.read_text())
    text = text.replace("crop_min = 128, crop_max = 256", "crop_min = 32, crop_max = 32")
    run = tmp_path / "finetune.toml"
    run.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["train", str(run), "--steps", "2", "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    assert train and all("image_reconstruction/l1" in r for r in train)
    tuned = atoken.Tokenizer.from_pretrained(out / "tokenizer")
    start = atoken.Tokenizer.from_pretrained(converted)
    assert tuned.config.to_dict() == start.config.to_dict()  # the official architecture
    moved = {
        k: float((v - start.state_dict()[k]).abs().max()) for k, v in tuned.state_dict().items()
    }
    assert moved["head.proj.weight"] > 0 and moved["encoder.patch_embed.proj.weight"] > 0
