"""Contracts that go through the public :class:`~atoken.Tokenizer`, the way users call it.

    from atoken.testing.contracts import TokenizerRoundTripContract, HeadContract

    class TestDepthThroughTheTokenizer(TokenizerRoundTripContract):
        modality_name = "depth"
        modality_params = {"depth_mean": 2.0}     # -> TokenizerConfig.modality_params

    class TestMyHead(HeadContract):
        head_name = "my_head"
        modality_name = "depth"                    # a modality the head decodes

Each test builds the tokenizer from ``preset`` (``tiny``) with ``modality_params`` as the
config's ``modality_params[modality_name]``, so the modality is built exactly as the tokenizer
builds it (:func:`atoken.core.modality.build_modality`), with its own projection and head when
it needs them. Samples come from the modality's ``examples(seed)``. atoken's suite runs both
classes over every registered modality and head, third-party ones included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch

from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.core.tokens import DiscreteTokens
from atoken.testing._samples import as_tensor

__all__ = ["HeadContract", "TokenizerRoundTripContract"]

#: FSQ settings of the contracts' discrete tokenizer (the official So/D: 8 groups x [4]^6).
FSQ_OVERRIDES: Mapping[str, Any] = {
    "bottleneck": "fsq",
    "bottleneck_params": {"levels": [4] * 6, "groups": 8},
    "latent_dim": 48,
}


def _canonical(modality: Modality, sample: Any) -> torch.Tensor:
    """The sample in the modality's canonical form (what decode gives back)."""
    return as_tensor(modality.unpatchify(*modality.patchify(sample)))


def _tokenizer(preset: str, modality: str, params: Mapping[str, Any], **overrides: Any) -> Any:
    from atoken.core.config import load_preset
    from atoken.tokenizer import Tokenizer

    merged = dict(overrides)
    built = merged.get("modalities") or load_preset(preset).modalities or ()
    merged["modalities"] = tuple(dict.fromkeys([*built, modality]))  # the modality under test
    if params:
        merged["modality_params"] = {modality: dict(params)}
    torch.manual_seed(0)
    return Tokenizer.from_preset(preset, **merged).eval()


@torch.no_grad()
def _randomize(tokenizer: Any) -> None:
    for p in tokenizer.parameters():
        if p.ndim > 1:
            torch.nn.init.normal_(p, std=0.02)


def _check_outputs(
    modality: Modality, samples: list[Any], decoded: list[Any], head: Any = None
) -> None:
    """Decoded samples are finite floats shaped like the canonical samples, or of the type
    the head declares (``head.sample_type``); a set-valued modality's (``set_valued``) are
    sets ``[n', d]`` of the input's row width, any number of rows."""
    assert len(decoded) == len(samples)
    sample_type = getattr(head, "sample_type", None)
    for sample, out in zip(samples, decoded, strict=True):
        if sample_type is not None:
            assert isinstance(out, sample_type), f"decoded {type(out).__name__}"
        elif modality.set_valued:
            want, got = _canonical(modality, sample), as_tensor(out)
            assert got.ndim == 2 and got.shape[1] == want.shape[-1], (
                f"decoded a set {tuple(got.shape)}, expected rows of {want.shape[-1]} values"
            )
        else:
            want = _canonical(modality, sample)
            got = as_tensor(out).shape
            assert got == want.shape, f"decoded {tuple(got)}, expected {want.shape}"
        out = as_tensor(out)
        assert out.is_floating_point() and bool(torch.isfinite(out).all())


class TokenizerRoundTripContract:
    """Encode -> decode shapes and dtypes, ``embed``, save/load, FSQ ``tokenize``/``detokenize``,
    an empty batch and a sample with zero tokens, all through the public tokenizer."""

    modality_name: ClassVar[str] = ""
    modality_params: ClassVar[Mapping[str, Any]] = {}
    preset: ClassVar[str] = "tiny"

    @pytest.fixture
    def name(self) -> str:
        """The modality under test (override to parametrize)."""
        if not self.modality_name:
            pytest.fail("set modality_name or override the `name` fixture")
        return self.modality_name

    @pytest.fixture
    def params(self) -> Mapping[str, Any]:
        return self.modality_params

    @pytest.fixture
    def tokenizer(self, name: str, params: Mapping[str, Any]) -> Any:
        return _tokenizer(self.preset, name, params)

    def test_modality_is_built_for_the_encoder(self, tokenizer: Any, name: str) -> None:
        mod = tokenizer.modality(name)
        assert isinstance(mod, Modality) and mod.name == name
        assert name in tokenizer.config.modalities
        if mod.value_dim != tokenizer.config.encoder.patch_dim:
            assert tokenizer.projections.has(name)

    def test_encode_decode_shapes_and_dtypes(self, tokenizer: Any, name: str) -> None:
        mod = tokenizer.modality(name)
        samples = mod.examples(0)
        with torch.no_grad():
            latent = tokenizer.encode(samples, name)
            decoded = tokenizer.decode(latent)
        assert isinstance(latent, SparseLatent) and latent.batch_size == len(samples)
        assert latent.channels == tokenizer.config.latent_dim
        assert latent.coords.dtype == torch.int32 and latent.feats.is_floating_point()
        assert set(latent.modality) == {name}
        if mod.layout == "xyz":
            assert not bool(latent.coords[:, 0].any()), "an xyz modality has t = 0"
        _check_outputs(mod, samples, decoded, tokenizer.head_for(name))

    def test_embed_is_normalised(self, tokenizer: Any, name: str) -> None:
        samples = tokenizer.modality(name).examples(1)
        with torch.no_grad():
            emb = tokenizer.embed(samples, name)
        assert emb.shape == (len(samples), tokenizer.encoder.width)
        norms = emb.norm(dim=-1)  # 1, or 0 for a sample without tokens and a bias-free head
        assert bool(((norms - 1).abs() < 1e-4).logical_or(norms < 1e-6).all())

    def test_save_and_load_decode_the_same(self, tokenizer: Any, name: str, tmp_path) -> None:
        from atoken.tokenizer import Tokenizer

        samples = tokenizer.modality(name).examples(2)
        _randomize(tokenizer)  # zero-initialised heads would hide a lost weight
        tokenizer.save_pretrained(tmp_path / "tok")
        loaded = Tokenizer.from_pretrained(tmp_path / "tok").eval()
        assert loaded.config == tokenizer.config
        with torch.no_grad():
            latent = tokenizer.encode(samples, name)
            assert loaded.encode(samples, name).equal(latent)
            for a, b in zip(tokenizer.decode(latent), loaded.decode(latent), strict=True):
                assert torch.equal(as_tensor(a), as_tensor(b))

    def test_fsq_tokenize_detokenize(self, name: str, params: Mapping[str, Any]) -> None:
        tok = _tokenizer(self.preset, name, params, **FSQ_OVERRIDES)
        mod = tok.modality(name)
        samples = mod.examples(3)
        with torch.no_grad():
            tokens = tok.tokenize(samples, name)
            restored = tok.detokenize(tokens)
            direct = tok.reconstruct(samples, name)
        assert isinstance(tokens, DiscreteTokens) and tokens.batch_size == len(samples)
        assert not tokens.ids.is_floating_point() and tokens.ids.shape[1] == 8
        assert int(tokens.ids.min()) >= 0 and int(tokens.ids.max()) < 4**6
        _check_outputs(mod, samples, restored, tok.head_for(name))
        for a, b in zip(restored, direct, strict=True):
            assert torch.allclose(as_tensor(a), as_tensor(b), atol=1e-5)

    def test_an_empty_batch(self, tokenizer: Any, name: str) -> None:
        with torch.no_grad():
            latent = tokenizer.encode([], name)
            assert latent.batch_size == 0 and latent.channels == tokenizer.config.latent_dim
            assert tokenizer.decode(latent) == []
            assert tokenizer.embed([], name).shape == (0, tokenizer.encoder.width)
        fsq = _tokenizer(self.preset, name, self.modality_params, **FSQ_OVERRIDES)
        with torch.no_grad():
            tokens = fsq.tokenize([], name)
            assert tokens.batch_size == 0 and fsq.detokenize(tokens) == []

    def test_a_sample_with_zero_tokens(self, tokenizer: Any, name: str) -> None:
        mod = tokenizer.modality(name)
        samples = mod.examples(4)[:2]
        raw = mod.pack(samples)  # raw values [N, d]
        n0 = int(raw.seqlens[0])
        emptied = SparseLatent(
            raw.feats[n0:],
            raw.coords[n0:],
            torch.tensor([0, int(raw.seqlens[1])]),
            modality=name,
            meta=raw.meta,
        )
        with torch.no_grad():
            latent = tokenizer.encode(emptied)
            assert latent.seqlens.tolist() == [0, int(raw.seqlens[1])]
            decoded = tokenizer.decode(latent)
            emb = tokenizer.embed(emptied)
        assert len(decoded) == 2 and bool(torch.isfinite(emb).all())
        _check_outputs(mod, samples, decoded, tokenizer.head_for(name))
        alone = emptied.select([0])  # a batch whose only sample has no tokens: N = 0
        with torch.no_grad():
            latent = tokenizer.encode(alone)
            assert latent.num_tokens == 0 and latent.batch_size == 1
            assert as_tensor(tokenizer.decode(latent)[0]).shape == as_tensor(decoded[0]).shape
            assert bool(torch.isfinite(tokenizer.embed(alone)).all())
        fsq = _tokenizer(self.preset, name, self.modality_params, **FSQ_OVERRIDES)
        with torch.no_grad():
            assert fsq.tokenize(emptied).seqlens.tolist() == [0, int(raw.seqlens[1])]


class HeadContract:
    """A head built by the tokenizer from its documented factory arguments decodes its
    modality's latents: ``forward(tokens, latent)`` keeps one row per token and passes
    gradients to the tokens, and decode gives samples of the right shapes."""

    head_name: ClassVar[str] = ""
    head_params: ClassVar[Mapping[str, Any]] = {}
    modality_name: ClassVar[str] = ""  # a modality the head decodes (default: the default one)
    preset: ClassVar[str] = "tiny"

    @pytest.fixture
    def head_and_modality(self) -> tuple[str, str]:
        """``(head name, modality name)`` (override to parametrize)."""
        if not self.head_name:
            pytest.fail("set head_name or override the `head_and_modality` fixture")
        from atoken.modalities import DEFAULT_MODALITY

        return self.head_name, self.modality_name or DEFAULT_MODALITY

    @pytest.fixture
    def tokenizer(self, head_and_modality: tuple[str, str]) -> Any:
        head, name = head_and_modality
        overrides: dict[str, Any] = {"heads": {name: head}}
        if self.head_params:
            overrides["head_params"] = {name: dict(self.head_params)}
        return _tokenizer(self.preset, name, {}, **overrides)

    def test_forward_keeps_rows_and_passes_gradients(
        self, tokenizer: Any, head_and_modality: tuple[str, str]
    ) -> None:
        _, name = head_and_modality
        head = tokenizer.head_for(name)
        latent = tokenizer.encode(tokenizer.modality(name).examples(0), name)
        tokens = torch.randn(latent.num_tokens, tokenizer.decoder.width, requires_grad=True)
        prediction = head(tokens, latent)
        if isinstance(prediction, torch.Tensor):
            assert prediction.shape[0] == latent.num_tokens
        loss = sum(
            p.float().square().sum()
            for p in (prediction if isinstance(prediction, (list, tuple)) else [prediction])
        )
        loss.backward()
        assert tokens.grad is not None and bool(torch.isfinite(tokens.grad).all())

    def test_decodes_through_the_tokenizer(
        self, tokenizer: Any, head_and_modality: tuple[str, str]
    ) -> None:
        _, name = head_and_modality
        mod = tokenizer.modality(name)
        samples = mod.examples(1)
        _randomize(tokenizer)  # zero-initialised heads hide wrong wiring
        with torch.no_grad():
            decoded = tokenizer.decode(tokenizer.encode(samples, name))
        _check_outputs(mod, samples, decoded, tokenizer.head_for(name))

    def test_zero_tokens(self, tokenizer: Any, head_and_modality: tuple[str, str]) -> None:
        _, name = head_and_modality
        head = tokenizer.head_for(name)
        latent = tokenizer.encode(tokenizer.modality(name).examples(0), name)
        empty = latent.select([0])
        empty = SparseLatent(
            empty.feats[:0],
            empty.coords[:0],
            torch.tensor([0]),
            modality=name,
            meta=empty.meta,
        )
        with torch.no_grad():
            prediction = head(torch.zeros(0, tokenizer.decoder.width), empty)
        if isinstance(prediction, torch.Tensor):
            assert prediction.shape[0] == 0
