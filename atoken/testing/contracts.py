"""Contract tests that every component must pass; plugin authors subclass them.

    from atoken.testing.contracts import ModalityContract

    class TestDepth(ModalityContract):
        modality_name = "depth"          # the registered name (or override the fixture)

atoken's own suite parametrizes these classes over the registries, so every installed
component, built-in or third-party, is tested. Each class reads the component through a
pytest fixture (``modality``, ``loss``, ``bottleneck``) that a subclass may override.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoken.core.attention import attention_math, call_attention
from atoken.core.coords import grid_index
from atoken.core.errors import ModalityInputError
from atoken.core.modality import Modality
from atoken.plugins.manager import get_registry
from atoken.testing._samples import as_tensor
from atoken.testing.strategies import seqlens
from atoken.testing.tokenizer_contracts import HeadContract, TokenizerRoundTripContract

__all__ = [
    "AttentionBackendContract",
    "BottleneckContract",
    "HeadContract",
    "LossContract",
    "ModalityContract",
    "TextEncoderContract",
    "TokenizerRoundTripContract",
    "as_tensor",
    "random_sets",
    "same_sample",
    "sorted_rows",
]

#: Contract tests read the component from a function-scoped fixture, and one contract class is
#: subclassed many times in one session (one subclass per component): both are by design.
_CONTRACT_CHECKS = [HealthCheck.function_scoped_fixture, HealthCheck.differing_executors]
_fixture_ok = settings(suppress_health_check=_CONTRACT_CHECKS, max_examples=8)
_seeds = st.integers(0, 2**16)


def random_sets(seed: int, width: int = 6) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(prediction, target)``: two lists of three sets ``[n_i, width]`` in [0, 1), each
    prediction a noisy copy of its target with other rows (a set metric's contract input)."""
    g = torch.Generator().manual_seed(seed)
    target = [torch.rand(n, width, generator=g) for n in (5, 9, 16)]
    noisy = [
        torch.cat([t, t[:2]]) + 0.05 * torch.randn(len(t) + 2, width, generator=g)  # [n + 2, w]
        for t in target
    ]
    return noisy, target


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``[n, d]`` in lexicographic order: two sets are equal when these are."""
    for column in reversed(range(x.shape[1])):
        x = x[x[:, column].argsort(stable=True)]
    return x


def same_sample(modality: Modality, restored: Any, sample: Any) -> bool:
    """Whether ``restored`` is ``sample``: equal tensors, or for a set-valued modality
    (``set_valued``) equal sets of rows, in any order."""
    a, b = as_tensor(restored), as_tensor(sample)
    if modality.set_valued:
        return a.shape == b.shape and torch.equal(sorted_rows(a), sorted_rows(b))
    return torch.equal(a, b)


class ModalityContract:
    """patchify/unpatchify round trip is exact, coords are unique and in range, tokens are a set
    (order does not matter), batches pack, and bad input raises ``ModalityInputError``. A
    set-valued modality's samples are compared as sets of rows (:func:`same_sample`)."""

    modality_name: ClassVar[str] = ""
    modality_params: ClassVar[Mapping[str, Any]] = {}

    @pytest.fixture
    def modality(self) -> Modality:
        if not self.modality_name:
            pytest.fail("set modality_name or override the `modality` fixture")
        return get_registry().modalities.create(self.modality_name, **self.modality_params)

    def test_declares_contract(self, modality: Modality) -> None:
        assert isinstance(modality, Modality)
        assert isinstance(modality.name, str) and modality.name
        assert isinstance(modality.value_dim, int) and modality.value_dim > 0
        assert modality.layout in ("thw", "xyz")

    @_fixture_ok
    @given(seed=_seeds)
    def test_roundtrip_is_exact(self, modality: Modality, seed: int) -> None:
        for sample in modality.examples(seed):
            values, coords, meta = modality.patchify(sample)
            assert values.ndim == 2 and values.shape[1] == modality.value_dim
            assert values.is_floating_point()
            assert coords.dtype == torch.int32 and coords.shape == (values.shape[0], 4)
            restored = modality.unpatchify(values, coords, meta)
            assert same_sample(modality, restored, sample)

    @_fixture_ok
    @given(seed=_seeds)
    def test_coords_unique_and_in_range(self, modality: Modality, seed: int) -> None:
        for sample in modality.examples(seed):
            _, coords, meta = modality.patchify(sample)
            flat = grid_index(coords, modality.grid_shape(meta), layout=modality.layout)
            assert torch.unique(flat).numel() == flat.numel()

    @_fixture_ok
    @given(seed=_seeds, data=st.data())
    def test_token_order_does_not_matter(self, modality: Modality, seed: int, data) -> None:
        for sample in modality.examples(seed):
            values, coords, meta = modality.patchify(sample)
            perm = data.draw(st.permutations(range(values.shape[0])))
            perm = torch.tensor(perm, dtype=torch.long)
            restored = modality.unpatchify(values[perm], coords[perm], meta)
            assert same_sample(modality, restored, sample)

    def test_batch_packs_and_unpacks(self, modality: Modality) -> None:
        samples = modality.examples(0)
        latent = modality.pack(samples)
        assert latent.batch_size == len(samples)
        assert set(latent.modality) == {modality.name}
        for restored, sample in zip(modality.unpack(latent), samples, strict=True):
            assert same_sample(modality, restored, sample)

    def test_bad_input_raises_typed_error(self, modality: Modality) -> None:
        bad = modality.invalid_examples()
        assert bad, "a modality must list at least one invalid input"
        for sample in bad:
            with pytest.raises(ModalityInputError):
                modality.patchify(sample)


class LossContract:
    """A loss returns a finite scalar and gradients flow to its differentiable inputs.

    Inputs come from the ``inputs`` fixture: the loss's own ``example_inputs()`` when it has
    one (a loss of latents, of exported terms or of sets needs other inputs than images),
    else two random image batches ``[2, 3, 32, 32]`` in [0, 1] and an empty context. A
    prediction may be a batch tensor or a list of samples (each a leaf that needs grad).
    """

    loss_name: ClassVar[str] = ""
    loss_params: ClassVar[Mapping[str, Any]] = {}

    @pytest.fixture
    def loss(self) -> Any:
        if not self.loss_name:
            pytest.fail("set loss_name or override the `loss` fixture")
        return get_registry().losses.create(self.loss_name, **self.loss_params)

    @pytest.fixture
    def inputs(self, loss: Any) -> tuple[Any, Any, Mapping[str, Any]]:
        """(prediction, target, context); override for a loss that takes other inputs."""
        if hasattr(loss, "example_inputs"):
            return loss.example_inputs()
        g = torch.Generator().manual_seed(0)
        prediction = torch.rand(2, 3, 32, 32, generator=g)
        target = torch.rand(2, 3, 32, 32, generator=g)
        return prediction, target, {}

    def test_scalar_finite_with_gradient(self, loss: Any, inputs) -> None:
        prediction, target, context = inputs

        def leaf(x: Any) -> Any:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                return x.detach().clone().requires_grad_(True)
            return x

        # a batch tensor, or a list of samples (sizes may differ: sets, native resolutions)
        many = isinstance(prediction, (list, tuple))
        prediction = [leaf(p) for p in prediction] if many else leaf(prediction)
        leaves = list(prediction) if many else [prediction]
        leaves += [v for v in context.values() if isinstance(v, torch.Tensor)]
        leaves = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
        assert leaves, "no differentiable input: prediction or a context tensor must need grad"
        value = loss(prediction, target, context)
        assert isinstance(value, torch.Tensor) and value.ndim == 0
        assert bool(torch.isfinite(value))
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
        assert all(g is None or bool(torch.isfinite(g).all()) for g in grads)


class BottleneckContract:
    """Output shapes match ``latent_dim``; a discrete bottleneck's ids round-trip exactly."""

    bottleneck_name: ClassVar[str] = ""
    bottleneck_params: ClassVar[Mapping[str, Any]] = {"in_dim": 16}

    @pytest.fixture
    def bottleneck(self) -> Any:
        if not self.bottleneck_name:
            pytest.fail("set bottleneck_name or override the `bottleneck` fixture")
        return get_registry().bottlenecks.create(self.bottleneck_name, **self.bottleneck_params)

    @_fixture_ok
    @given(n=st.integers(0, 24), seed=_seeds)
    def test_shapes(self, bottleneck: Any, n: int, seed: int) -> None:
        x = torch.randn(n, bottleneck.in_dim, generator=torch.Generator().manual_seed(seed))
        out = bottleneck(x)
        assert out.latent.shape == (n, bottleneck.latent_dim)
        assert bool(torch.isfinite(out.latent).all())
        if out.ids is not None:
            assert out.ids.shape[0] == n and not out.ids.is_floating_point()

    @_fixture_ok
    @given(n=st.integers(0, 24), seed=_seeds)
    def test_ids_round_trip(self, bottleneck: Any, n: int, seed: int) -> None:
        if not hasattr(bottleneck, "quantize"):
            pytest.skip("continuous bottleneck: no ids")
        z = torch.randn(n, bottleneck.latent_dim, generator=torch.Generator().manual_seed(seed))
        z_q, ids = bottleneck.quantize(z)
        assert torch.equal(bottleneck.ids_to_codes(ids), z_q)


@st.composite
def _kv_lengths(
    draw: st.DrawFn, *, max_samples: int = 5, max_len: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(seqlens, kv_seqlens) int64 ``[B]``: a sample with queries has at least one key."""
    q_lens = draw(seqlens(max_samples=max_samples, max_len=max_len))
    kv_lens = [draw(st.integers(1 if n else 0, max_len)) for n in q_lens.tolist()]
    return q_lens, torch.tensor(kv_lens, dtype=torch.int64)


class AttentionBackendContract:
    """``fn(q, k, v, seqlens)`` over packed samples: shape and dtype kept, equal to the ``math``
    reference and to running each sample alone (fp32, 1e-5), zero-length samples included.
    Keys packed apart (``kv_seqlens``, through :func:`~atoken.core.attention.call_attention`,
    natively or by its fallback) equal ``math`` too, and empty inputs give ``[0, H, D]``: no
    samples, samples without tokens, and samples with keys but no queries."""

    backend_name: ClassVar[str] = ""

    @pytest.fixture
    def backend(self) -> Any:
        if not self.backend_name:
            pytest.fail("set backend_name or override the `backend` fixture")
        return get_registry().attention_backends.create(self.backend_name)

    @settings(suppress_health_check=_CONTRACT_CHECKS, max_examples=25)
    @given(
        lengths=seqlens(max_samples=6, max_len=24),
        heads=st.integers(1, 3),
        dim=st.sampled_from([4, 8, 16]),
        seed=_seeds,
    )
    def test_matches_math_and_each_sample_alone(
        self, backend: Any, lengths: torch.Tensor, heads: int, dim: int, seed: int
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        N = int(lengths.sum())
        q, k, v = (torch.randn(N, heads, dim, generator=g) for _ in range(3))
        out = backend(q, k, v, lengths)
        assert out.shape == q.shape and out.dtype == q.dtype
        assert torch.allclose(out, attention_math(q, k, v, lengths), atol=1e-5, rtol=1e-5)
        start = 0
        for n in lengths.tolist():
            if n:
                alone = backend(*(t[start : start + n] for t in (q, k, v)), torch.tensor([n]))
                assert torch.allclose(out[start : start + n], alone, atol=1e-5, rtol=1e-5)
            start += n

    @settings(suppress_health_check=_CONTRACT_CHECKS, max_examples=25)
    @given(
        lengths=_kv_lengths(max_samples=5, max_len=16),
        heads=st.integers(1, 3),
        dim=st.sampled_from([4, 8, 16]),
        seed=_seeds,
    )
    def test_kv_seqlens_match_math_natively_and_by_fallback(
        self,
        backend: Any,
        lengths: tuple[torch.Tensor, torch.Tensor],
        heads: int,
        dim: int,
        seed: int,
    ) -> None:
        q_lens, kv_lens = lengths
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(int(q_lens.sum()), heads, dim, generator=g)
        k, v = (torch.randn(int(kv_lens.sum()), heads, dim, generator=g) for _ in range(2))
        ref = attention_math(q, k, v, q_lens, kv_seqlens=kv_lens)
        out = call_attention(backend, q, k, v, q_lens, kv_lens)
        assert out.shape == q.shape and out.dtype == q.dtype
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)

        def plain(q, k, v, seqlens):  # the minimal signature: call_attention must fall back
            return backend(q, k, v, seqlens)

        fallback = call_attention(plain, q, k, v, q_lens, kv_lens)
        assert fallback.shape == q.shape
        assert torch.allclose(fallback, ref, atol=1e-5, rtol=1e-5)

    def test_empty_inputs(self, backend: Any) -> None:
        H, D = 2, 8
        empty = torch.zeros(0, H, D)
        none = torch.zeros(0, dtype=torch.int64)
        zeros = torch.zeros(2, dtype=torch.int64)
        assert backend(empty, empty, empty, none).shape == (0, H, D)  # B = 0
        assert backend(empty, empty, empty, zeros).shape == (0, H, D)  # samples without tokens
        assert call_attention(backend, empty, empty, empty, none, none).shape == (0, H, D)
        assert call_attention(backend, empty, empty, empty, zeros, zeros).shape == (0, H, D)
        k, v = (torch.randn(5, H, D, generator=torch.Generator().manual_seed(i)) for i in (0, 1))
        no_queries = call_attention(backend, empty, k, v, torch.tensor([0]), torch.tensor([5]))
        assert no_queries.shape == (0, H, D)  # keys but no queries
        q = torch.randn(3, H, D, generator=torch.Generator().manual_seed(2))
        q_lens, kv_lens = torch.tensor([0, 3, 0]), torch.tensor([2, 3, 0])
        out = call_attention(backend, q, k, v, q_lens, kv_lens)
        ref = attention_math(q, k, v, q_lens, kv_seqlens=kv_lens)
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


class TextEncoderContract:
    """A text encoder: ``dim`` known before loading, ``encode`` gives ``[T, dim]`` float32
    L2-normalised rows, equal texts give equal rows, order is kept, an empty list gives
    ``[0, dim]``, and a bare string or non-string items raise ``ModalityInputError``."""

    text_encoder_name: ClassVar[str] = ""
    text_encoder_params: ClassVar[Mapping[str, Any]] = {}

    @pytest.fixture
    def text_encoder(self) -> Any:
        if not self.text_encoder_name:
            pytest.fail("set text_encoder_name or override the `text_encoder` fixture")
        return get_registry().text_encoders.create(
            self.text_encoder_name, **self.text_encoder_params
        )

    def test_encodes_normalised_rows_in_order(self, text_encoder: Any) -> None:
        dim = text_encoder.dim
        assert isinstance(dim, int) and dim > 0
        texts = ["a photo of a cat", "a tax form", "a photo of a cat"]
        emb = text_encoder.encode(texts)
        assert emb.shape == (3, dim) and emb.dtype == torch.float32
        assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-4)
        assert torch.allclose(emb[0], emb[2], atol=1e-5)
        swapped = text_encoder.encode([texts[1], texts[0]])
        assert torch.allclose(swapped, emb[[1, 0]], atol=1e-5)
        assert text_encoder.encode([]).shape == (0, dim)

    def test_bad_input_raises_typed_error(self, text_encoder: Any) -> None:
        for bad in ("a bare string", [1, 2], None):
            with pytest.raises(ModalityInputError):
                text_encoder.encode(bad)
