"""Checks at the tokenizer boundary (#33 item 2).

A throwaway 12-band modality (:mod:`tests.core._bands`) is registered through
``registered_plugin``; faulty variants return what a buggy plugin might, and the error names
the modality, its plugin and the hook.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
import torch

import atoken
from atoken.core.boundary import BoundaryChecks, HeadOutputError
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.testing import registered_plugin
from tests.core._bands import Bands, bands_sample

PLUGIN = "bands-plugin"


class WideBands(Bands):
    """patchify drops a value per token: [n, 3071]."""

    name = "wide_bands"

    def patchify(self, sample):
        values, coords, meta = super().patchify(sample)
        return values[:, :-1], coords, meta


class TwiceBands(Bands):
    """patchify gives its second token the first one's coordinate."""

    name = "twice_bands"

    def patchify(self, sample):
        values, coords, meta = super().patchify(sample)
        coords = coords.clone()
        coords[1] = coords[0]
        return values, coords, meta


class NanBands(Bands):
    """patchify lets a NaN through (in a sample of more than 2 tokens)."""

    name = "nan_bands"

    def patchify(self, sample):
        values, coords, meta = super().patchify(sample)
        if values.shape[0] > 2:
            values = values.clone()
            values[2, 5] = float("nan")
        return values, coords, meta


class LongBands(Bands):
    """patchify gives int64 coordinates."""

    name = "long_bands"

    def patchify(self, sample):
        values, coords, meta = super().patchify(sample)
        return values, coords.long(), meta


class PackedBands(Bands):
    """Packs itself (overrides ``pack``), with a duplicate coordinate in its second sample."""

    name = "packed_bands"

    def pack(self, samples):
        parts = [self.patchify(s) for s in samples]
        coords = torch.cat([c for _, c, _ in parts])
        coords[-1] = coords[-2]
        return SparseLatent(
            torch.cat([v for v, _, _ in parts]),
            coords,
            [v.shape[0] for v, _, _ in parts],
            modality=self.name,
            meta=[m for _, _, m in parts],
            validate=False,
        )


MODALITIES = (Bands, WideBands, TwiceBands, NanBands, LongBands, PackedBands)


class BandsPlugin:
    @atoken.hookimpl
    def register_modalities(self, register):
        for cls in MODALITIES:
            register(cls.name, cls)


class ShortHead(torch.nn.Module):
    """A head one value short of its modality's width."""

    def __init__(self, *, width: int, value_dim: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(width, value_dim - 1)

    def forward(self, tokens, latent):
        return self.proj(tokens)


class ShortHeadPlugin:
    @atoken.hookimpl
    def register_heads(self, register):
        register("short", ShortHead)


@pytest.fixture(scope="module")
def bands():
    with registered_plugin(BandsPlugin(), name=PLUGIN):
        yield


def _tokenizer(*names: str, **overrides: Any) -> atoken.Tokenizer:
    torch.manual_seed(0)
    return atoken.create_tokenizer(
        "tiny", modalities=["image", *names], depth=1, decoder_depth=1, **overrides
    )


_sample = bands_sample


# ------------------------------------------------------------------ item 2: patchify and pack
@pytest.mark.parametrize(
    ("name", "hook", "fault"),
    [
        ("wide_bands", "patchify (sample 0)", r"values have shape \(6, 3071\), not \[n, 3072\]"),
        ("twice_bands", "patchify", r"sample 0 holds the coordinate \(0, 0, 0, 0\) twice"),
        ("nan_bands", "patchify", "sample 0 holds NaN or infinite values"),
        ("long_bands", "patchify (sample 0)", r"coords must be int32 \[6, 4\].*torch.int64"),
        ("packed_bands", "pack", r"sample 1 holds the coordinate \(0, 1, 1, 0\) twice"),
    ],
)
def test_what_a_plugin_returns_is_checked_where_it_enters_and_names_it(bands, name, hook, fault):
    tok = _tokenizer(name)
    where = rf"modality '{name}' \(plugin '{PLUGIN}'\), {re.escape(hook)}: "
    with torch.no_grad(), pytest.raises(ModalityInputError, match=where + fault):
        tok.encode([_sample(0), _sample(1)], modality=name)
    # the training step's way in (model.prepare) is the same
    with pytest.raises(ModalityInputError, match=where):
        tok.prepare([_sample(0), _sample(1)], modality=name)


def test_a_later_sample_is_named(bands):
    tok = _tokenizer("nan_bands")
    small = _sample(0)[:, :16, :16]  # one token each: no NaN
    with pytest.raises(ModalityInputError, match="sample 2 holds NaN"):
        tok.prepare([small, small, _sample(1)], modality="nan_bands")


def test_a_checked_pack_equals_the_modality_pack():
    mod = Bands()
    samples = [_sample(0), _sample(1)[:, :16], _sample(2)[:, :0]]  # 6, 3 and 0 tokens
    want, got = mod.pack(samples), BoundaryChecks().pack(mod, samples)
    assert torch.equal(got.feats, want.feats) and torch.equal(got.coords, want.coords)
    assert torch.equal(got.seqlens, want.seqlens) and got.meta == want.meta
    assert got.modality == want.modality
    empty = BoundaryChecks().pack(mod, [])
    assert empty.batch_size == 0 and empty.feats.shape == (0, mod.value_dim)


def test_uniqueness_holds_for_coordinates_whose_grid_index_would_not_fit_int64():
    top = 2**31 - 1

    class Far(Bands):
        def patchify(self, sample):
            values, coords, meta = super().patchify(sample)
            coords = coords.clone()
            coords[0] = torch.tensor([top, top, top, top], dtype=torch.int32)
            return values, coords, meta

    checks = BoundaryChecks(plugins={"bands": "far"})
    latent = checks.pack(Far(), [_sample(0), _sample(1)])  # (2**31)**4 cells: rows sorted
    assert latent.num_tokens == 12

    class FarTwice(Far):
        def patchify(self, sample):
            values, coords, meta = super().patchify(sample)
            coords[3] = coords[0]
            return values, coords, meta

    with pytest.raises(ModalityInputError, match=r"sample 0 holds the coordinate \(2147483647"):
        checks.pack(FarTwice(), [_sample(0)])


def test_the_checks_can_be_turned_off_for_the_benchmark_only(bands):
    tok = _tokenizer("twice_bands")
    assert tok.boundary.enabled  # on by default
    tok.boundary = attrs.evolve(tok.boundary, enabled=False)
    batch = tok.prepare([_sample(0)], modality="twice_bands")  # unchecked: no error
    assert batch.groups[0].values.num_tokens == 6


def test_a_model_built_without_the_factory_names_an_unknown_plugin():
    with pytest.raises(ModalityInputError, match=r"modality 'wide_bands' \(plugin 'unknown'\)"):
        BoundaryChecks().pack(WideBands(), [_sample(0)])


# ------------------------------------------------------------------ item 2: heads
def test_a_head_of_the_wrong_width_is_blamed_on_the_head(bands):
    with registered_plugin(ShortHeadPlugin(), name="short-head"):
        tok = _tokenizer("bands", heads={"bands": "short"})
    assert tok.boundary.heads["bands"] == ("short", "short-head")
    want = (
        rf"modality 'bands' \(plugin '{PLUGIN}'\), head 'short' \(plugin 'short-head'\): "
        r"head ShortHead gave \(6, 3071\) for 6 tokens"
    )
    with torch.no_grad(), pytest.raises(HeadOutputError, match=want) as info:
        tok.reconstruct([_sample()], modality="bands")
    assert isinstance(info.value, ModalityInputError) and isinstance(info.value, ConfigError)


def test_the_factory_records_each_modality_s_plugin_and_head():
    tok = _tokenizer("mesh", "video")
    plugins = tok.boundary.plugins
    registry = atoken.get_registry()
    assert plugins == {n: registry.modalities.plugin_of(n) for n in ("image", "mesh", "video")}
    pixels = registry.heads.plugin_of("pixels")
    assert tok.boundary.heads["image"] == ("pixels", pixels)
    assert tok.boundary.heads["mesh"] == ("gaussians", registry.heads.plugin_of("gaussians"))
