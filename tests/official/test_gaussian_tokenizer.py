"""The official Gaussian decoder inside a tokenizer: ``Tokenizer.from_official(...,
gaussian_decoder=...)`` decodes a 3D latent to the official decoder's Gaussians, ``atoken
convert official --gaussian-decoder`` writes a tokenizer folder that keeps it, and ``atoken
reconstruct`` on that folder writes them as a 3DGS PLY and a views | reconstruction picture.
Random weights at a reduced width, in the official checkpoint layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import atoken
from atoken.cli import main
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.modalities.mesh import GaussianSet, Voxels
from atoken.official import infer_config, load_gaussian_decoder
from atoken.testing.official import (
    official_gaussian_decoder_state_dict,
    official_gaussian_yaml,
    official_state_dict,
    official_yaml,
    write_official_checkpoint,
)

TOKENIZER = {"width": 64, "heads": 2, "depth": 1, "mlp": 96}
GAUSSIAN = {"width": 64, "depth": 2, "mlp": 96, "gaussians": 4}


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return official_state_dict(**TOKENIZER, seed=3)


@pytest.fixture(scope="module")
def gs_state() -> dict[str, torch.Tensor]:
    return official_gaussian_decoder_state_dict(**GAUSSIAN, seed=4)


@pytest.fixture(scope="module")
def tok(state, gs_state) -> atoken.Tokenizer:
    return atoken.Tokenizer.from_official(
        state, heads=2, gaussian_decoder=gs_state, gaussian_config={"num_heads": 2}
    )


def _voxels(seed: int, n: int = 60, resolution: int = 64) -> Voxels:
    g = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, resolution, (n, 3), generator=g), dim=0)
    return Voxels.create(coords, torch.rand(len(coords), 16, 16, 3, generator=g), resolution)


def _oracle(state, gs_state, samples: list[Voxels]) -> list[GaussianSet]:
    """The official two-stage decode by hand: the same tokenizer decoding the 3D modality's
    patches (the ``pixels`` head: the official decoder's ``out_layer``), their first 768
    values normalised as the official pipeline passes them (x 2 - 1), then the Gaussian
    decoder on ``(sample, x, y, z)``."""
    cfg = infer_config(state, heads=2, modalities=("image", "mesh"))
    patches_tok = atoken.Tokenizer.from_official(
        state, cfg.with_overrides(heads={"mesh": "pixels"})
    )
    decoder = load_gaussian_decoder(gs_state, {"num_heads": 2})
    with torch.no_grad():
        latent = patches_tok.encode(samples, "mesh")
        decoded = patches_tok.decode(latent)  # Voxels with the reconstructed patches
        feats = torch.cat([v.patches.reshape(len(v), 768) for v in decoded]) * 2 - 1  # [N, 768]
        coords = torch.cat(
            [torch.cat([torch.full((len(v), 1), b), v.coords], 1) for b, v in enumerate(decoded)]
        ).int()  # [N, 4] (sample, x, y, z)
        return decoder.decode(feats, coords)


def test_decode_of_a_3d_latent_gives_the_official_decoders_gaussians(tok, state, gs_state):
    samples = [_voxels(0), _voxels(1, n=30)]
    assert tok.config.heads == {"mesh": "swin_gaussians"}
    with torch.no_grad():
        latent = tok.encode(samples, "mesh")
        got = tok.decode(latent)
    want = _oracle(state, gs_state, samples)
    assert [len(g) for g in got] == [4 * len(v) for v in samples] == [len(w) for w in want]
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, GaussianSet)
        torch.testing.assert_close(g.as_tensor(), w.as_tensor(), atol=1e-5, rtol=1e-5)
    # the Gaussians move with the decoder's weights: the oracle is not trivially equal
    assert float(got[0].means.std(0).min()) > 1e-3


def test_the_head_holds_the_patch_layer_rows_and_the_gaussian_decoder(tok, state, gs_state):
    head = tok.heads["mesh"]
    torch.testing.assert_close(head.pixels.weight, state["decoder.out_layer.weight"][:768])
    theirs = load_gaussian_decoder(gs_state, {"num_heads": 2}).state_dict()
    ours = head.gaussian.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # image decoding is untouched by the Gaussian decoder
    plain = atoken.Tokenizer.from_official(state, heads=2)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(tok.reconstruct([image])[0], plain.reconstruct([image])[0])


def test_save_and_load_keep_the_gaussian_decoder(tmp_path, tok):
    tok.save_pretrained(tmp_path / "tok")
    again = atoken.Tokenizer.from_pretrained(tmp_path / "tok")
    samples = [_voxels(2)]
    with torch.no_grad():
        a = tok.decode(tok.encode(samples, "mesh"))[0]
        b = again.decode(again.encode(samples, "mesh"))[0]
    torch.testing.assert_close(a.as_tensor(), b.as_tensor())


def test_a_voxel_grid_other_than_the_decoders_is_refused(tok):
    with torch.no_grad(), pytest.raises(ModalityInputError, match="32\\^3 voxel grid"):
        tok.reconstruct([_voxels(3, resolution=32)], "mesh")


def test_wrong_gaussian_options_are_config_errors(state, gs_state):
    with pytest.raises(ConfigError, match="gaussian_config needs gaussian_decoder"):
        atoken.Tokenizer.from_official(state, heads=2, gaussian_config={"num_heads": 2})
    narrow = official_gaussian_decoder_state_dict(**GAUSSIAN, in_channels=4000)
    with pytest.raises(ConfigError, match="reads 4000 values per voxel"):
        atoken.Tokenizer.from_official(state, heads=2, gaussian_decoder=narrow)


# ------------------------------------------------------------------ the command line
def _files(tmp_path, state, gs_state, extra_gs: dict[str, torch.Tensor] | None = None):
    ckpt = write_official_checkpoint(tmp_path / "atoken-soc.pt", state)
    yaml = tmp_path / "atoken-soc.yaml"
    yaml.write_text(official_yaml(**TOKENIZER))
    gs = write_official_checkpoint(tmp_path / "3d_decode_gs.pt", {**gs_state, **(extra_gs or {})})
    gs_yaml = tmp_path / "3d_decode_gs.yaml"
    shapes = {k: GAUSSIAN[k] for k in ("width", "depth", "mlp", "gaussians")}
    gs_yaml.write_text(official_gaussian_yaml(**shapes, heads=2))
    return ckpt, yaml, gs, gs_yaml


def test_convert_then_reconstruct_writes_the_official_gaussians(tmp_path, state, gs_state, tok):
    import trimesh

    lpips = {"lpips_loss.net.slice1.0.weight": torch.zeros(8, 3, 3, 3)}  # training-only
    ckpt, yaml, gs, gs_yaml = _files(tmp_path, state, gs_state, lpips)
    out = tmp_path / "converted"
    args = ["convert", "official", str(ckpt), str(out), "--config", str(yaml)]
    result = CliRunner().invoke(
        main, [*args, "--gaussian-decoder", str(gs), "--gaussian-config", str(gs_yaml)]
    )
    assert result.exit_code == 0, result.output
    assert "with the Gaussian decoder" in result.output
    assert "3d_decode_gs.pt" in (out / "NOTICE.md").read_text()
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.3))
    box.visual.vertex_colors = np.tile([200, 60, 30, 255], (len(box.vertices), 1))
    asset = tmp_path / "box.ply"
    box.export(asset)
    recon = tmp_path / "recon"
    result = CliRunner().invoke(
        main, ["reconstruct", "--checkpoint", str(out), "--out", str(recon), str(asset)]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"box\s+mesh\s+\d+ voxels\s+PSNR [\d.]+ dB", result.output), result.output
    saved = GaussianSet.load_ply(recon / "box_gaussians.ply")  # the standard 3DGS PLY
    with torch.no_grad():
        (want,) = tok.reconstruct([str(asset)], "mesh")  # the Python API, same weights
    mesh = tok.modality("mesh").render(str(asset))[1]
    want = want.transformed(mesh.center, mesh.scale)  # in the asset's own units
    assert len(saved) == len(want) > 0 and len(saved) % 4 == 0
    torch.testing.assert_close(saved.means, want.means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(saved.scales, want.scales, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(saved.sh0, want.sh0, atol=1e-5, rtol=1e-5)
    picture = np.asarray(Image.open(recon / "box_side_by_side.png"))
    assert picture.shape[0] == 4 * 256 and picture.shape[1] == 2 * 256 + 4  # views | renders


def test_reconstruct_reads_a_folder_of_official_views(tmp_path, state, gs_state, tok):
    """The official 3D input itself (views + depth + transforms.json) through the CLI: packed
    by the official rule, the Gaussians written in the views' world, the views beside them."""
    import trimesh

    from atoken.modalities.mesh.official_views import write_official_views

    ckpt, yaml, gs, gs_yaml = _files(tmp_path, state, gs_state)
    out = tmp_path / "converted"
    args = ["convert", "official", str(ckpt), str(out), "--config", str(yaml)]
    gs_args = ["--gaussian-decoder", str(gs), "--gaussian-config", str(gs_yaml)]
    assert CliRunner().invoke(main, [*args, *gs_args]).exit_code == 0
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.3))
    views = tmp_path / "asset_views"
    write_official_views(box, views, views=3, size=64)
    recon = tmp_path / "recon"
    result = CliRunner().invoke(
        main, ["reconstruct", "--checkpoint", str(out), "--out", str(recon), str(views)]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"asset_views\s+mesh\s+\d+ voxels\s+PSNR [\d.]+ dB", result.output)
    saved = GaussianSet.load_ply(recon / "asset_views_gaussians.ply")
    with torch.no_grad():
        (want,) = tok.reconstruct([str(views)], "mesh")  # the Python API reads the folder too
    assert len(saved) == len(want) > 0
    torch.testing.assert_close(saved.means, want.means, atol=1e-5, rtol=1e-5)
    picture = np.asarray(Image.open(recon / "asset_views_side_by_side.png"))
    assert picture.shape[:2] == (3 * 64, 2 * 64 + 4)  # a row per view: view | render


def test_convert_accepts_a_converted_gaussian_decoder_folder(tmp_path, state, gs_state):
    ckpt, yaml, gs, gs_yaml = _files(tmp_path, state, gs_state)
    folder = tmp_path / "gs"
    ok = CliRunner().invoke(
        main, ["convert", "official", str(gs), str(folder), "--config", str(gs_yaml)]
    )
    assert ok.exit_code == 0, ok.output
    out = tmp_path / "tok"
    args = ["convert", "official", str(ckpt), str(out), "--config", str(yaml)]
    result = CliRunner().invoke(main, [*args, "--gaussian-decoder", str(folder)])
    assert result.exit_code == 0, result.output
    tok = atoken.Tokenizer.from_pretrained(out)
    theirs = load_gaussian_decoder(folder).state_dict()
    assert all(
        torch.equal(tok.heads["mesh"].gaussian.state_dict()[k], v) for k, v in theirs.items()
    )


def test_convert_refuses_a_checkpoint_of_something_else(tmp_path):
    other = write_official_checkpoint(tmp_path / "resnet.pt", {"fc.weight": torch.zeros(2, 2)})
    result = CliRunner().invoke(main, ["convert", "official", str(other), str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "neither an official AToken tokenizer checkpoint" in result.output
    assert "fc.weight" in result.output and not (tmp_path / "o").exists()


def test_convert_refuses_a_gaussian_config_without_the_decoder(tmp_path, state, gs_state):
    ckpt, _, _, gs_yaml = _files(tmp_path, state, gs_state)
    args = ["convert", "official", str(ckpt), str(tmp_path / "o"), "--gaussian-config"]
    result = CliRunner().invoke(main, [*args, str(gs_yaml)])
    assert result.exit_code != 0 and "--gaussian-config needs --gaussian-decoder" in result.output
