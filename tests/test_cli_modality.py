"""``atoken encode`` and ``atoken reconstruct`` for any registered modality (--modality)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.data import MediaWriter
from atoken.data.latent_store import LatentStore


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tok") / "tok"
    params = {"depth": {"depth_mean": 3.0, "depth_std": 2.0}}
    tok = atoken.Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, modalities=["image", "depth"], modality_params=params
    )
    tok.save_pretrained(folder)
    return str(folder)


def test_reconstruct_a_depth_array_and_refuse_what_does_not_fit(tmp_path, checkpoint):
    depth = (1 + 4 * np.random.default_rng(0).random((40, 56))).astype(np.float32)
    np.save(tmp_path / "room.npy", depth)
    out = tmp_path / "out"
    args = ["reconstruct", "--checkpoint", checkpoint, "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--modality", "depth", str(tmp_path / "room.npy")])
    assert result.exit_code == 0, result.output
    assert "depth" in result.output and "RMSE" in result.output
    recon = np.load(out / "room_recon.npy")
    assert recon.shape == depth.shape and np.isfinite(recon).all()
    assert (out / "room_side_by_side.png").exists()
    # a .npy needs --modality; an image file is not a depth map; an unknown modality is named
    no_kind = CliRunner().invoke(main, [*args, str(tmp_path / "room.npy")])
    assert no_kind.exit_code == 1 and "--modality" in no_kind.output
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    wrong = CliRunner().invoke(main, [*args, "--modality", "depth", str(tmp_path / "x.png")])
    assert wrong.exit_code == 1 and "DataModalityError" in wrong.output
    picture = CliRunner().invoke(main, [*args, str(tmp_path / "x.png")])
    header = picture.output.splitlines()[0].split()
    assert picture.exit_code == 0 and header[-1] == "quality", picture.output  # not "error"
    assert "PSNR" in picture.output and "dB" in picture.output
    unknown = CliRunner().invoke(main, [*args, "--modality", "sonar", str(tmp_path / "room.npy")])
    assert unknown.exit_code == 1 and "no 'sonar' modality" in unknown.output
    # The saved tokenizer loads with its own list: a registered modality it was not built for
    # is named with how to add it (installing a plugin never changes a saved model).
    other = CliRunner().invoke(main, [*args, "--modality", "video", str(tmp_path / "room.npy")])
    assert other.exit_code == 1
    assert "no 'video' modality (it has ['image', 'depth'])" in other.output


def test_encode_a_float_store_as_its_modality(tmp_path, checkpoint):
    url = str(tmp_path / "depth.zarr")
    g = np.random.default_rng(1)
    with MediaWriter(url, modality="depth", sample_axes=("H", "W"), dtype="float32") as w:
        for i in range(3):
            w.add(f"d{i}", (1 + 4 * g.random((32, 48))).astype(np.float32))
    out = str(tmp_path / "latents.zarr")
    result = CliRunner().invoke(
        main, ["encode", "--checkpoint", checkpoint, url, out, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "encoded 3 samples (depth)" in result.output
    store = LatentStore(out)
    assert len(store) == 3 and [m["source"] for m in store.meta(range(3))] == ["d0", "d1", "d2"]
    wrong = CliRunner().invoke(
        main, ["encode", "--checkpoint", checkpoint, url, out, "--modality", "image"]
    )
    assert wrong.exit_code == 1 and "holds 'depth' samples" in wrong.output
