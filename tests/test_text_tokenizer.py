"""A tokenizer aligned to text: W_s, embed/embed_text, checkpoints, zero-shot and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.core.errors import ConfigError
from atoken.tokenizer import Tokenizer
from atoken.viz import to_pil
from atoken.zeroshot import classify, parse_labels


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return Tokenizer.from_preset("tiny", text_encoder="minilm").eval()


def test_embed_is_in_the_text_space(tok):
    images = torch.rand(3, 3, 32, 48)
    emb = tok.embed(images)
    text = tok.embed_text(["a cat", "a dog"])
    assert emb.shape == (3, 384) and text.shape == (2, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    # embed == normalize(W_s(MAP head's unnormalised pooled embedding))
    feats = tok.encode_features(images)
    pooled = tok.encoder.head(feats.feats, feats.seqlens, normalize=False)
    expected = torch.nn.functional.normalize(tok.semantic.proj(pooled), dim=-1)
    assert torch.allclose(emb, expected, atol=1e-6)


def test_semantic_state_is_initialised_as_siglip(tok):
    assert float(tok.semantic.logit_scale.detach()) == pytest.approx(math.log(10.0))
    assert float(tok.semantic.logit_bias.detach()) == pytest.approx(-10.0)


def test_without_text_encoder_embed_keeps_the_map_head_and_embed_text_fails():
    plain = Tokenizer.from_preset("tiny")
    assert plain.semantic is None and plain.text_encoder is None
    assert plain.embed(torch.rand(2, 3, 32, 32)).shape == (2, plain.config.encoder.backbone.width)
    with pytest.raises(ConfigError, match="text encoder"):
        plain.embed_text(["a cat"])


def test_text_tower_is_frozen_and_not_saved(tok, tmp_path):
    assert not any(name.startswith("text") for name in tok.state_dict())
    assert all(p.requires_grad for p in tok.semantic.parameters())
    tok.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["config"]["text_encoder"] == "minilm"
    back = Tokenizer.from_pretrained(tmp_path).eval()
    assert back.config.text_encoder == "minilm"
    for name in ("semantic.proj.weight", "semantic.logit_scale", "semantic.logit_bias"):
        assert torch.equal(back.state_dict()[name], tok.state_dict()[name])
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(back.embed(images), tok.embed(images), atol=1e-6)
    assert back.text_encoder is tok.text_encoder  # the frozen tower is shared, not copied


def test_unknown_text_encoder_lists_close_matches():
    with pytest.raises(atoken.UnknownComponentError, match="minilm"):
        Tokenizer.from_preset("tiny", text_encoder="minilmm")


def test_text_encoder_needs_the_map_head():
    with pytest.raises(ConfigError, match="MAP head"):
        Tokenizer.from_preset("tiny", text_encoder="minilm", map_head=False)


def test_classify_gives_probabilities(tok):
    probs = classify(tok, torch.rand(2, 3, 32, 32), "cat, dog,bird")
    assert probs.shape == (2, 3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("labels", ["", " , ,", []])
def test_empty_label_list_is_a_typed_error(tok, labels):
    with pytest.raises(ConfigError, match="empty"):
        parse_labels(labels)
    with pytest.raises(ConfigError, match="empty"):
        classify(tok, torch.rand(1, 3, 32, 32), labels)


def test_classify_template_must_have_a_slot(tok):
    with pytest.raises(ConfigError, match="template"):
        classify(tok, torch.rand(1, 3, 32, 32), "a,b", template="no slot")


def _images(tmp_path, n=2):
    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        to_pil(torch.rand(3, 32, 32)).save(path)
        paths.append(str(path))
    return paths


def test_cli_classify_prints_probabilities(tok, tmp_path):
    tok.save_pretrained(tmp_path / "ckpt")
    paths = _images(tmp_path)
    result = CliRunner().invoke(
        main, ["classify", "--checkpoint", str(tmp_path / "ckpt"), "--labels", "cat,dog", *paths]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["image", "cat", "dog", "best"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["img0.png", "img1.png"]
    for row in rows:
        assert float(row[1]) + float(row[2]) == pytest.approx(1.0, abs=2e-4)
        assert row[3] in ("cat", "dog")


def test_cli_classify_rejects_an_empty_label_list(tok, tmp_path):
    tok.save_pretrained(tmp_path / "ckpt")
    paths = _images(tmp_path, 1)
    result = CliRunner().invoke(
        main, ["classify", "--checkpoint", str(tmp_path / "ckpt"), "--labels", " , ", *paths]
    )
    assert result.exit_code != 0 and "ConfigError" in result.output and "empty" in result.output


def _metric_names(output: str) -> list[str]:
    """The first column of the metrics table (a progress bar may precede the table)."""
    lines = output.strip().splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    return [line.split()[0] for line in lines[rule + 1 :] if line.strip()]


def test_cli_eval_reports_semantic_metrics_on_captioned_digits(tok, tmp_path):
    tok.save_pretrained(tmp_path / "ckpt")
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--data",
            "digits",
            "--digit-classes",
            "0,1",
            "--metrics",
            "psnr",
        ],
    )
    assert result.exit_code == 0, result.output
    names = _metric_names(result.output)
    assert names == ["psnr", "zeroshot_top1", "i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5"]


def test_cli_eval_without_text_encoder_reports_image_metrics_only(tmp_path):
    Tokenizer.from_preset("tiny").save_pretrained(tmp_path / "plain")
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--checkpoint",
            str(tmp_path / "plain"),
            "--data",
            "digits",
            "--digit-classes",
            "0,1",
        ],
    )
    assert result.exit_code == 0, result.output
    names = _metric_names(result.output)
    assert names == ["psnr", "ssim"]


def test_eval_digits_follow_the_runs_data_settings(tmp_path):
    from atoken.tasks.alignment import heldout_digits

    a, b = heldout_digits("0,1", seed=0), heldout_digits("0,1", seed=1)
    assert not torch.equal(a.images, b.images)  # the seed chooses the held-out split
    small = heldout_digits("0,1", size=32, heldout_fraction=0.5)
    assert small.images.shape[-1] == 32 and len(small.labels) > len(a.labels)
    Tokenizer.from_preset("tiny").save_pretrained(tmp_path / "plain")
    args = ["eval", "--checkpoint", str(tmp_path / "plain"), "--data", "digits"]
    result = CliRunner().invoke(
        main, [*args, "--digit-classes", "0,1", "--digit-size", "32", "--digit-seed", "1"]
    )
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, [*args, "--heldout-fraction", "1.5"])
    assert bad.exit_code != 0 and "heldout-fraction" in bad.output


@pytest.mark.slow
def test_trainable_text_tower_is_a_saved_submodule(tmp_path):
    tok = Tokenizer.from_preset(
        "tiny", text_encoder="minilm", text_encoder_params={"trainable": True}
    )
    tok.embed_text(["load the tower"])
    assert tok.text_encoder is tok.text_tower and tok.text_tower.trainable
    keys = [k for k in tok.state_dict() if k.startswith("text_tower.")]
    assert keys and all(p.requires_grad for p in tok.text_tower.parameters())
    with torch.no_grad():
        next(tok.text_tower.parameters()).add_(0.01)  # a fine-tuned tower
    tok.save_pretrained(tmp_path)
    back = Tokenizer.from_pretrained(tmp_path)
    assert torch.equal(back.state_dict()[keys[0]], tok.state_dict()[keys[0]])
    texts = ["a cat", "a dog"]
    assert torch.allclose(back.embed_text(texts), tok.embed_text(texts), atol=1e-6)
