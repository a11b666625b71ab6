"""A 3D asset through a tokenizer converted from the official weights, beside the official code
on the same random weights: views in the official layout -> packing -> encoder -> latent ->
decoder -> Gaussian decoder -> Gaussians.

The official side runs what ``atoken_inference`` runs: ``pack_multiview_feat.py`` on the folder,
the features through float16, x 2 - 1, zero-padded to 3072 at ``(0, 1, x, y, z)``
(``inference_3d``), ``AutoencoderKL.encode``, the posterior mean (the official wrapper samples
it; the mean is its deterministic part), ``decode``, then ``SLatGaussianDecoder`` on the first
768 values at ``(0, x, y, z)``. atoken's side is one call: ``tok.encode([folder], "mesh")``,
then ``tok.decode``. Tolerance 1e-4 in fp32. Where the official code does not import
(``ATOKEN_OFFICIAL_CODE``, see ``official_code.py``) every test here is skipped with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import atoken
from atoken.modalities.mesh.official_views import write_official_views
from atoken.official import OFFICIAL_SOFTCAP, load_gaussian_decoder
from tests.official.official_code import (
    autoencoder_arch,
    gaussian_config,
    import_official,
    randomise_autoencoder,
    randomise_gaussian_decoder,
)

TOLERANCE = 1e-4
RESOLUTION = 32  # the voxel grid (64 released): about 2,000 voxels keep the official run short


def _mesh():
    """A box and an off-centre sphere with random face colours."""
    import trimesh

    rng = np.random.default_rng(0)
    box = trimesh.creation.box(extents=(0.8, 0.5, 0.6))
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    ball.apply_translation((0.35, 0.2, 0.1))
    mesh = trimesh.util.concatenate([box, ball])
    mesh.visual.face_colors = rng.integers(0, 256, (len(mesh.faces), 4), dtype=np.uint8)
    mesh.visual.face_colors[:, 3] = 255
    return mesh


@pytest.fixture(scope="module")
def chain(tmp_path_factory, request):
    kl, basic, decoder_gs, model, script = import_official(
        "atoken_inference.model.autoencoder_kl",
        "atoken_inference.model.basic",
        "atoken_inference.model.decoder_gs",
        "atoken_inference.model",
        "atoken_inference.scripts.pack_multiview_feat",
    )
    if not torch.cuda.is_available():  # the official Gaussian class moves constants to CUDA
        patch = pytest.MonkeyPatch()
        patch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
        request.addfinalizer(patch.undo)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    autoencoder = kl.AutoencoderKL(**autoencoder_arch()).eval()
    state = randomise_autoencoder(autoencoder, g)
    gs_config = gaussian_config(width=192, heads=3, depth=2, mlp=384, resolution=RESOLUTION)
    gaussians = decoder_gs.SLatGaussianDecoder(**gs_config).eval()
    gs_state = randomise_gaussian_decoder(gaussians, g)
    softcap = OFFICIAL_SOFTCAP if model.ATTN == "flash_attn" else None  # xformers: no cap
    decoder = load_gaussian_decoder(gs_state, {"model": gs_config}, softcap=softcap)
    tok = atoken.Tokenizer.from_official(state, autoencoder_arch(), gaussian_decoder=decoder)
    folder = tmp_path_factory.mktemp("mesh") / "views"
    write_official_views(_mesh(), folder, views=4, size=256)
    official = _run_official(folder, script, basic.SparseTensor, autoencoder, gaussians)
    return tok, folder, official


def _run_official(folder, script, sparse_tensor, autoencoder, gaussians) -> dict:
    from PIL import Image

    intr, w2c = script.convert_cam_poses(str(folder / "transforms.json"))
    images = [Image.open(folder / f"{i:03d}.png") for i in range(4)]
    depth = np.stack([np.load(folder / f"{i:03d}_depth.npy") for i in range(4)])
    feats, coords = script.compute_feat_coords_pair(
        all_images=images, all_depth=depth, all_w2c=w2c, all_intrinsics=intr,
        vol_resolution=RESOLUTION, bounding_radius=0.5,
    )  # fmt: skip
    feats = feats.cpu().half().float()  # stored as float16 by the script
    values = torch.cat([feats * 2 - 1, feats.new_zeros(len(feats), 3072 - 768)], dim=1)
    coords = coords.int().cpu()
    c5 = torch.cat([torch.zeros_like(coords[:, :1]), torch.ones_like(coords[:, :1]), coords], 1)
    with torch.no_grad():
        z, pooled, features = autoencoder.encode(sparse_tensor(feats=values, coords=c5), True)
        mean = z.feats[:, :48]
        rec = autoencoder.decode(z.replace(mean), training=False).sample
        patches = sparse_tensor(feats=rec.feats[:, :768], coords=rec.coords[:, [0, 2, 3, 4]])
        (rep,) = gaussians(patches)
    return {
        "coords": coords,
        "features": features.feats,
        "latent": mean,
        "pooled": pooled,
        "gaussians": {
            "means": rep.get_xyz,
            "sh0": rep.get_features.reshape(-1, 3),
            "scales": rep.get_scaling,
            "quats": rep.get_rotation,
            "opacities": rep.get_opacity[:, 0],
        },
    }


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


def test_a_converted_tokenizer_encodes_the_official_views_as_the_official_encoder(chain):
    tok, folder, official = chain
    with torch.no_grad():
        features = tok.encode_features([str(folder)], "mesh")
        latent = tok.encode([str(folder)], "mesh")
        pooled = tok.embed([str(folder)], "mesh")
    voxels = official["coords"]
    xyz = features.coords[:, [2, 1, 3]]  # atoken's (t, y, x, z) for the official packing
    assert torch.equal(xyz, voxels), "the voxels or their order differ"
    diffs = {
        "features": _diff(features.feats, official["features"]),
        "latent": _diff(latent.feats, official["latent"]),
        "pooled": _diff(pooled, official["pooled"]),
    }
    print(f"\n3D encoder parity, {len(voxels)} voxels: " + ", ".join(
        f"{k} {v:.1e}" for k, v in diffs.items()
    ))  # fmt: skip
    assert max(diffs.values()) < TOLERANCE, diffs


def test_a_converted_tokenizer_decodes_the_official_gaussians(chain):
    tok, folder, official = chain
    with torch.no_grad():
        (gaussians,) = tok.decode(tok.encode([str(folder)], "mesh"))
    diffs = {k: _diff(getattr(gaussians, k), v) for k, v in official["gaussians"].items()}
    print(f"\n3D reconstruction parity, {len(gaussians.means)} Gaussians: " + ", ".join(
        f"{k} {v:.1e}" for k, v in diffs.items()
    ))  # fmt: skip
    assert max(diffs.values()) < TOLERANCE, diffs


def test_the_atoken_packing_is_not_what_the_official_encoder_sees(chain):
    """The check can fail: the same voxels at atoken's own coordinates (0, x, y, z) without
    the position table give other features."""
    tok, folder, official = chain
    mesh = tok.modality("mesh")
    voxels = mesh.voxels(str(folder))[0]
    with torch.no_grad():
        right = tok.encode_features([voxels], "mesh").feats
        mesh.axes, mesh.uses_pos_table = "xyz", False  # the coordinates before #34
        try:
            wrong = tok.encode_features([voxels], "mesh").feats
        finally:
            mesh.axes, mesh.uses_pos_table = "yxz", True
    assert _diff(right, official["features"]) < TOLERANCE
    assert _diff(wrong, official["features"]) > 100 * TOLERANCE
