"""SparseLatent: invariants, packing properties and every validation error."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import atoken
from atoken import LatentValidationError, SparseLatent
from atoken.testing import assert_latent_equal
from atoken.testing.strategies import sparse_latents


def _latent(n_per_sample=(2, 3), C=4) -> SparseLatent:
    parts = [
        torch.tensor([[0, i, 0, 0] for i in range(n)], dtype=torch.int32) for n in n_per_sample
    ]
    coords = torch.cat(parts) if parts else torch.zeros(0, 4, dtype=torch.int32)
    N = coords.shape[0]
    return SparseLatent(
        torch.arange(N * C, dtype=torch.float32).reshape(N, C),
        coords,
        torch.tensor(n_per_sample, dtype=torch.int64),
        modality="image",
    )


# --------------------------------------------------------------------------- properties
@given(sparse_latents())
def test_pack_unpack_identity(latent):
    parts = latent.unpack()
    assert len(parts) == latent.batch_size
    assert all(p.batch_size == 1 for p in parts)
    if latent.batch_size:
        assert_latent_equal(SparseLatent.pack(parts), latent)


@given(sparse_latents(min_samples=1), st.data())
def test_select_matches_unpacked_parts(latent, data):
    idx = data.draw(st.lists(st.integers(0, latent.batch_size - 1), max_size=6))
    selected = latent.select(idx)
    parts = latent.unpack()
    assert selected.batch_size == len(idx)
    for b, i in enumerate(idx):
        assert_latent_equal(selected.unpack()[b], parts[i])


@given(sparse_latents(min_samples=1), st.data())
def test_select_bool_mask_keeps_order(latent, data):
    mask = data.draw(
        st.lists(st.booleans(), min_size=latent.batch_size, max_size=latent.batch_size)
    )
    selected = latent.select(torch.tensor(mask))
    expected = [i for i, keep in enumerate(mask) if keep]
    assert [m["index"] for m in selected.meta] == expected


@given(sparse_latents())
def test_offsets_and_sample_ids_agree(latent):
    offsets = latent.offsets
    ids = latent.sample_ids()
    assert offsets[0] == 0 and offsets[-1] == latent.num_tokens
    for b in range(latent.batch_size):
        assert bool((ids[offsets[b] : offsets[b + 1]] == b).all())


@given(sparse_latents())
def test_to_dtype_keeps_coords_int32(latent):
    moved = latent.to(dtype=torch.float64)
    assert moved.feats.dtype == torch.float64 and moved.coords.dtype == torch.int32
    assert torch.equal(moved.feats.float(), latent.feats)


def _with_value(value: float, dtype: torch.dtype = torch.float32) -> SparseLatent:
    lat = _latent()
    feats = lat.feats.to(dtype)
    feats[1, 2] = value
    return lat.replace(feats=feats)


@pytest.mark.parametrize(
    ("value", "source", "target"),
    [
        (-1e5, torch.float32, torch.float16),
        (65520.0, torch.float32, torch.float16),  # the first value that rounds to inf
        (1e39, torch.float64, torch.float32),
        (1e39, torch.float64, torch.bfloat16),
    ],
)
def test_to_a_narrower_dtype_that_overflows_raises(value, source, target):
    with pytest.raises(LatentValidationError) as err:
        _with_value(value, source).to(dtype=target)
    assert err.value.field == "feats"
    message = str(err.value)
    assert str(target) in message
    assert f"{abs(value):.6g}" in message


@given(value=st.floats(-65519, 65519, allow_nan=False, width=32))
def test_to_float16_converts_values_that_fit(value):
    lat = _with_value(value)
    half = lat.to(dtype=torch.float16)
    assert half.feats.dtype == torch.float16
    assert torch.equal(half.feats, lat.feats.half())
    assert bool(torch.isfinite(half.feats).all())


def test_to_bfloat16_keeps_large_values():
    lat = _with_value(3e38)
    bf = lat.to(dtype=torch.bfloat16)
    assert bf.feats.dtype == torch.bfloat16
    assert bool(torch.isfinite(bf.feats).all())
    assert torch.allclose(bf.feats[1, 2].float(), torch.tensor(3e38), rtol=1e-2)


def test_overflow_is_checked_only_for_narrower_dtypes(monkeypatch):
    lat = _with_value(1e5)
    calls = []
    real = torch.isfinite

    def spy(t):
        calls.append(t.dtype)
        return real(t)

    monkeypatch.setattr(torch, "isfinite", spy)
    lat.to(dtype=torch.float64)
    lat.to(dtype=torch.float32)
    lat.to(device="cpu")
    assert calls == []  # wider, equal or no dtype: no scan of the values
    lat.to(dtype=torch.bfloat16)
    assert calls == [torch.bfloat16]
    empty = SparseLatent(torch.zeros(0, 5), torch.zeros(0, 4, dtype=torch.int32), [])
    assert empty.to(dtype=torch.float16).feats.dtype == torch.float16


def test_replace_feats_may_change_channels():
    lat = _latent()
    new = lat.replace(feats=torch.zeros(lat.num_tokens, 7))
    assert new.channels == 7 and torch.equal(new.coords, lat.coords)
    with pytest.raises(LatentValidationError) as err:
        lat.replace(feats=torch.zeros(lat.num_tokens + 1, 7))
    assert err.value.field == "coords"


def test_zero_token_samples_and_empty_batch_are_valid():
    lat = _latent((0, 3, 0))
    assert lat.batch_size == 3 and lat.num_tokens == 3
    assert [p.num_tokens for p in lat.unpack()] == [0, 3, 0]
    empty = SparseLatent(torch.zeros(0, 5), torch.zeros(0, 4, dtype=torch.int32), [])
    assert empty.batch_size == 0 and empty.unpack() == []
    assert empty.select([]).batch_size == 0


def test_same_coords_in_different_samples_are_allowed():
    coords = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 0]], dtype=torch.int32)
    lat = SparseLatent(torch.zeros(2, 1), coords, [1, 1])
    assert lat.batch_size == 2


# --------------------------------------------------------------------------- validation
def _parts():
    return {
        "feats": torch.zeros(3, 2),
        "coords": torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.int32),
        "seqlens": torch.tensor([2, 1]),
    }


BAD = {
    "length mismatch": ("coords", dict(coords=torch.zeros(2, 4, dtype=torch.int32))),
    "feats rank": ("feats", dict(feats=torch.zeros(3))),
    "feats dtype": ("feats", dict(feats=torch.zeros(3, 2, dtype=torch.int64))),
    "coords rank": ("coords", dict(coords=torch.zeros(3, 4, 1, dtype=torch.int32))),
    "coords width": ("coords", dict(coords=torch.zeros(3, 3, dtype=torch.int32))),
    "coords dtype": ("coords", dict(coords=torch.zeros(3, 4, dtype=torch.int64))),
    "seqlens rank": ("seqlens", dict(seqlens=torch.tensor([[2, 1]]))),
    "seqlens dtype": ("seqlens", dict(seqlens=torch.tensor([2, 1], dtype=torch.int32))),
    "seqlens sum": ("seqlens", dict(seqlens=torch.tensor([2, 2]))),
    "seqlens negative": ("seqlens", dict(seqlens=torch.tensor([4, -1]))),
    "negative coords": (
        "coords",
        dict(coords=torch.tensor([[0, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 0]], dtype=torch.int32)),
    ),
    "duplicate coords": (
        "coords",
        dict(coords=torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.int32)),
    ),
    "nan feats": ("feats", dict(feats=torch.tensor([[0.0, 1], [float("nan"), 0], [0, 0]]))),
    "inf feats": ("feats", dict(feats=torch.tensor([[0.0, 1], [float("inf"), 0], [0, 0]]))),
    "feats not a tensor": ("feats", dict(feats=[[0.0, 0.0]] * 3)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_input_raises_typed_error_naming_field(case):
    field, override = BAD[case]
    parts = _parts() | override
    with pytest.raises(LatentValidationError) as err:
        SparseLatent(parts["feats"], parts["coords"], parts["seqlens"])
    assert isinstance(err.value, atoken.AtokenError)
    assert err.value.field == field
    assert str(err.value).startswith(field)


def test_metadata_and_modality_count_mismatch():
    p = _parts()
    with pytest.raises(LatentValidationError, match=r"^meta") as err:
        SparseLatent(p["feats"], p["coords"], p["seqlens"], meta=[{}])
    assert err.value.field == "meta"
    with pytest.raises(LatentValidationError, match=r"^modality") as err:
        SparseLatent(p["feats"], p["coords"], p["seqlens"], modality=["image"] * 3)
    assert err.value.field == "modality"


@given(sparse_latents(min_samples=1, max_len=8), st.data())
def test_any_within_sample_duplicate_is_caught(latent, data):
    sizes = latent.seqlens.tolist()
    candidates = [b for b, n in enumerate(sizes) if n >= 2]
    if not candidates:
        return
    b = data.draw(st.sampled_from(candidates))
    start = int(latent.offsets[b])
    i, j = data.draw(st.lists(st.integers(0, sizes[b] - 1), min_size=2, max_size=2, unique=True))
    coords = latent.coords.clone()
    coords[start + j] = coords[start + i]
    with pytest.raises(LatentValidationError, match="duplicate") as err:
        SparseLatent(latent.feats, coords, latent.seqlens)
    assert err.value.field == "coords"


@given(sparse_latents(min_samples=1, max_len=8), st.data())
def test_any_non_finite_value_is_caught(latent, data):
    if latent.num_tokens == 0:
        return
    feats = latent.feats.clone()
    i = data.draw(st.integers(0, latent.num_tokens - 1))
    c = data.draw(st.integers(0, latent.channels - 1))
    feats[i, c] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    with pytest.raises(LatentValidationError, match=r"^feats"):
        SparseLatent(feats, latent.coords, latent.seqlens)


def test_select_and_pack_errors():
    lat = _latent()
    with pytest.raises(LatentValidationError, match="out of range"):
        lat.select([2])
    with pytest.raises(LatentValidationError, match="mask"):
        lat.select(torch.tensor([True]))
    with pytest.raises(LatentValidationError, match="empty"):
        SparseLatent.pack([])
    with pytest.raises(LatentValidationError, match="channels"):
        SparseLatent.pack([_latent(C=4), _latent(C=3)])
