"""Discrete tokens for language models with the official So/D settings (8 groups x [4] * 6):
``Tokenizer.tokenize`` / ``detokenize`` and ``atoken encode --ids``, through the public API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import atoken
from atoken.cli import main
from atoken.core.errors import LatentValidationError
from atoken.core.tokens import DiscreteTokens
from atoken.data.latent_store import LatentStore
from atoken.testing.official import official_state_dict, write_official_checkpoint


@pytest.fixture(scope="module")
def sod_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sod")
    ckpt = write_official_checkpoint(
        tmp / "atoken-sod.pt", official_state_dict(width=64, heads=2, depth=1, mlp=96, seed=5)
    )
    out = tmp / "sod"
    result = CliRunner().invoke(
        main, ["convert", "official", str(ckpt), str(out), "--fsq", "--heads", "2"]
    )
    assert result.exit_code == 0, result.output
    return out


def _samples():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 48, 64, generator=g), torch.rand(3, 8, 32, 32, generator=g)]


def test_tokenize_gives_ids_coords_lengths_and_codebook_sizes(sod_folder):
    tok = atoken.Tokenizer.from_pretrained(sod_folder)
    image, clip = _samples()
    with torch.no_grad():
        tokens = tok.tokenize([image, clip], modality=["image", "video"])
    assert isinstance(tokens, DiscreteTokens)
    assert tokens.ids.shape == (12 + 8, 8) and not tokens.ids.is_floating_point()
    assert tokens.seqlens.tolist() == [12, 8] and tokens.coords.shape == (20, 4)
    assert tokens.codebook_sizes == (4096,) * 8 and tokens.groups == 8
    assert int(tokens.ids.min()) >= 0 and int(tokens.ids.max()) < 4096
    assert tokens.modality == ("image", "video")
    assert tokens.to_dict()["codebook_sizes"] == [4096] * 8


def test_detokenize_inverts_tokenize(sod_folder):
    tok = atoken.Tokenizer.from_pretrained(sod_folder)
    image, clip = _samples()
    with torch.no_grad():
        tokens = tok.tokenize([image, clip], modality=["image", "video"])
        decoded = tok.detokenize(tokens)
        want = tok.reconstruct([image, clip], modality=["image", "video"])
    assert decoded[0].shape == image.shape and decoded[1].shape == clip.shape
    for got, ref in zip(decoded, want, strict=True):
        torch.testing.assert_close(got, ref)
    # the ids carry everything: the latent is the codes of the ids
    codes = tok.bottleneck.ids_to_codes(tokens.ids)
    with torch.no_grad():
        torch.testing.assert_close(codes, tok.encode([image, clip], ["image", "video"]).feats)


def test_ids_outside_their_codebook_are_refused(sod_folder):
    tok = atoken.Tokenizer.from_pretrained(sod_folder)
    with torch.no_grad():
        tokens = tok.tokenize([_samples()[0]])
    bad = tokens.ids.clone()
    bad[0, 3] = 4096
    with pytest.raises(LatentValidationError, match="codebook"):
        DiscreteTokens(
            ids=bad, coords=tokens.coords, seqlens=tokens.seqlens, modality=tokens.modality,
            meta=tokens.meta, codebook_sizes=tokens.codebook_sizes,
        )  # fmt: skip


def test_atoken_encode_ids_stores_the_tokens(sod_folder, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    g = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(g.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            folder / f"{name}.png"
        )
    out = tmp_path / "tokens.zarr"
    result = CliRunner().invoke(
        main,
        ["encode", "--checkpoint", str(sod_folder), str(folder), str(out), "--ids",
         "--dtype", "float32", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "codebook sizes [4096, 4096" in result.output
    stored = LatentStore(str(out)).tokens()
    assert stored.codebook_sizes == (4096,) * 8 and stored.ids.shape == (24, 8)
    tok = atoken.Tokenizer.from_pretrained(sod_folder)
    images = [
        torch.from_numpy(np.array(Image.open(folder / f"{n}.png"))).permute(2, 0, 1) / 255
        for n in ("a", "b")
    ]
    with torch.no_grad():
        want = tok.tokenize(images)
        assert torch.equal(stored.ids.long(), want.ids.long())
        torch.testing.assert_close(tok.detokenize(stored)[1], tok.detokenize(want)[1])


def test_atoken_encode_ids_refuses_a_continuous_tokenizer(tmp_path):
    soc = tmp_path / "soc"
    atoken.Tokenizer.from_official(
        official_state_dict(width=64, heads=2, depth=1, mlp=96), heads=2
    ).save_pretrained(soc)
    result = CliRunner().invoke(
        main, ["encode", "--checkpoint", str(soc), "photos", str(tmp_path / "t"), "--ids"]
    )
    assert result.exit_code != 0 and "--ids needs a discrete tokenizer" in result.output
