"""Zero-shot with a converted official checkpoint: the ``open_clip_text`` SigLIP2 text tower
(random, small, built offline), W_s = identity and the official logit scale and bias, through
``Tokenizer.from_official``, ``atoken convert official --text-tower`` and ``atoken classify``.
The scores must equal the official formula on the official image embedding."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from open_clip.model import _build_text_tower

import atoken
from atoken.cli import main
from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.official import OFFICIAL_LOGIT_BIAS, OFFICIAL_LOGIT_SCALE, official_logits
from atoken.testing.contracts import TextEncoderContract
from atoken.testing.official import official_state_dict, write_official_checkpoint

SMALL = {"width": 64, "heads": 2, "depth": 1, "mlp": 96}
WORDS = ["a", "photo", "of", "cat", "dog", "bird", "the", "digit", "three"]
#: SigLIP2-So400m's text config (open_clip ViT-SO400M-16-SigLIP2-naflex) at a tiny size.
TEXT_CFG = {
    "context_length": 8,
    "vocab_size": len(WORDS) + 2,
    "tokenizer_kwargs": {"clean": "canonicalize"},
    "width": 32,
    "heads": 2,
    "layers": 1,
    "no_causal_mask": True,
    "proj_bias": True,
    "pool_type": "last",
    "norm_kwargs": {"eps": 1e-6},
    "act_kwargs": {"approximate": "tanh"},
}


def _tower_folder(folder, embed_dim=SMALL["width"]):
    """An open_clip text-tower checkpoint folder as on the Hugging Face hub: weights (with a
    vision key and SigLIP2's own logit scale, both ignored), ``open_clip_config.json`` and a
    tokenizer."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tower = _build_text_tower(embed_dim, dict(TEXT_CFG))
    state = {f"text.{k}": v.contiguous() for k, v in tower.state_dict().items()}
    state["visual.trunk.patch_embed.proj.weight"] = torch.zeros(2, 2)
    state["logit_scale"] = torch.tensor([math.log(112.0)])
    save_file(state, str(folder / "open_clip_model.safetensors"))
    model_cfg = {"embed_dim": embed_dim, "custom_text": True, "text_cfg": TEXT_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="[UNK]", pad_token="[PAD]"
    )
    fast.save_pretrained(folder)
    return folder / "open_clip_model.safetensors", tower.eval(), fast


def _reference_text(tower, fast, texts):
    """The tower run by hand: SigLIP2's canonicalised text, ids padded to the context length."""
    from open_clip.tokenizer import canonicalize_text

    ids = torch.ones(len(texts), TEXT_CFG["context_length"], dtype=torch.long)  # [T, L] pad
    for row, text in enumerate(texts):
        got = fast(canonicalize_text(text))["input_ids"][: TEXT_CFG["context_length"]]
        ids[row, : len(got)] = torch.tensor(got)
    with torch.no_grad():
        return F.normalize(tower(ids).float(), dim=-1)  # [T, D]


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    return _tower_folder(tmp_path_factory.mktemp("siglip2"))


@pytest.fixture(scope="module")
def state():
    return official_state_dict(**SMALL, seed=3)


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 48, 64, generator=g), torch.rand(3, 32, 32, generator=g)]


def test_scores_are_the_official_formula_on_the_official_embedding(tower, state):
    path, model, fast = tower
    plain = atoken.Tokenizer.from_official(state, heads=2)
    tok = atoken.Tokenizer.from_official(state, heads=2, text_tower=path)
    assert tok.config.text_encoder == "open_clip_text"
    images, texts = _images(), ["a photo of a cat", "a photo of a dog", "the digit three"]
    image = tok.embed(images)  # [B, 64]
    assert torch.equal(image, plain.embed(images))  # W_s = identity: the official embedding
    text = tok.embed_text(texts)
    assert torch.allclose(text, _reference_text(model, fast, texts), atol=1e-6)
    assert tok.semantic.logit_scale.item() == pytest.approx(OFFICIAL_LOGIT_SCALE, abs=1e-6)
    assert tok.semantic.logit_bias.item() == OFFICIAL_LOGIT_BIAS
    cos = image @ text.T
    formula = math.exp(4.8438) * cos + (-15.5625)  # the official constants, by hand
    assert torch.allclose(tok.semantic.logits(image, text), formula, atol=1e-4)
    assert torch.allclose(tok.semantic.logits(image, text), official_logits(image, text))


def test_convert_and_classify_through_the_command_line(tower, state, tmp_path):
    from PIL import Image

    path, model, fast = tower
    ckpt = write_official_checkpoint(tmp_path / "atoken-soc.pt", state)
    out = tmp_path / "converted"
    runner = CliRunner()
    res = runner.invoke(
        main, ["convert", "official", str(ckpt), str(out), "--heads", "2", "--text-tower", path]
    )
    assert res.exit_code == 0, res.output
    files = []
    for i, image in enumerate(_images()):
        files.append(tmp_path / f"img{i}.png")
        array = (image.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(array).save(files[-1])
    labels = ["cat", "dog", "bird"]
    tok = atoken.Tokenizer.from_pretrained(out)
    assert tok.config.text_encoder_params["pretrained"] == str(path.resolve())
    from atoken.data.pixels import to_image_tensor

    image = tok.embed([to_image_tensor(str(f)) for f in files])
    text = _reference_text(model, fast, [f"a photo of a {x}" for x in labels])
    logits = official_logits(image, text)  # [B, K]
    for flag, probs in (("--sigmoid", torch.sigmoid(logits)), (None, logits.softmax(-1))):
        args = ["classify", "--checkpoint", str(out), "--labels", ",".join(labels)]
        args += ["--template", "a photo of a {}", *([flag] if flag else []), *map(str, files)]
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
        rows = [line.split() for line in res.output.splitlines() if line.startswith("img")]
        printed = torch.tensor([[float(v) for v in row[1:4]] for row in rows])
        assert torch.allclose(printed, probs, rtol=1e-3, atol=1e-4), (res.output, probs)


def test_a_text_tower_of_another_width_is_refused(state, tmp_path):
    path, _, _ = _tower_folder(tmp_path / "wide", embed_dim=48)
    with pytest.raises(ConfigError, match="1152"):
        atoken.Tokenizer.from_official(state, heads=2, text_tower=path)
    with pytest.raises(ConfigError, match="text_tower"):
        atoken.Tokenizer.from_official(state, heads=2, text_tokenizer=tmp_path)


def test_the_naflex_text_tower_is_known_without_its_weights(tmp_path):
    fake = tmp_path / "open_clip_model.safetensors"
    fake.write_bytes(b"")  # read on first use only
    with pytest.raises(WeightsNotFoundError, match="tokenizer"):
        atoken.get_registry().text_encoders.create("open_clip_text", pretrained=fake)
    (tmp_path / "tokenizer.json").write_text("{}")
    enc = atoken.get_registry().text_encoders.create("open_clip_text", pretrained=fake)
    assert enc.dim == 1152 and not enc.loaded  # ViT-SO400M-16-SigLIP2-naflex's text side
    with pytest.raises(WeightsNotFoundError, match="pretrained="):
        atoken.get_registry().text_encoders.create("open_clip_text")


def test_the_tower_is_counted_without_its_weights(tower):
    from atoken.plugins.text_encoders.open_clip_text import OpenCLIPTextTower

    path, model, _ = tower
    assert OpenCLIPTextTower.planned(pretrained=path) == (
        SMALL["width"],
        sum(p.numel() for p in model.parameters()),
    )
    # SigLIP2-So400m's text tower: 707.8M values, 295M of them the 256k-token embedding
    assert OpenCLIPTextTower.planned() == (1152, 707_782_896)


class TestRandomSigLIP2TextTowerPassesTheContract(TextEncoderContract):
    """The ``open_clip_text`` code path on a small random SigLIP2-shaped tower."""

    @pytest.fixture
    def text_encoder(self, tower):
        return atoken.get_registry().text_encoders.create("open_clip_text", pretrained=tower[0])


def test_the_text_tower_options_do_not_apply_to_the_gaussian_decoder(tower, tmp_path):
    from atoken.testing.official import official_gaussian_decoder_state_dict

    state = official_gaussian_decoder_state_dict(width=64, depth=1, mlp=96)
    ckpt = write_official_checkpoint(tmp_path / "3d_decode_gs.pt", state)
    args = ["convert", "official", str(ckpt), str(tmp_path / "gs"), "--text-tower", tower[0]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "--text-* apply to tokenizers: ignored" in result.output
