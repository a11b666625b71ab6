"""The mesh modality's official packing (``MeshModality(packing="official")``, what
``Tokenizer.from_official`` sets): the official rule from any raw sample, the official axes
recorded in the sample's meta and read back by the heads, the position table on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import atoken
from atoken.core.errors import ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.modalities.mesh.axes import latent_voxels
from atoken.modalities.mesh.head import GaussianHead
from atoken.modalities.mesh.modality import MeshModality
from atoken.modalities.mesh.official_layout import load_views
from atoken.modalities.mesh.official_packing import voxel_features
from atoken.modalities.mesh.official_views import to_official_views, write_views
from atoken.modalities.mesh.swin_head import sample_coords
from atoken.modalities.mesh.voxelize import Voxels
from atoken.testing.official import official_state_dict

SMALL = {"views": 3, "render_size": 64, "resolution": 16}


def _mesh():
    import trimesh

    box = trimesh.creation.box(extents=(0.7, 0.5, 0.3))
    rng = np.random.default_rng(0)
    box.visual.face_colors = rng.integers(0, 256, (len(box.faces), 4), dtype=np.uint8)
    box.visual.face_colors[:, 3] = 255
    return box


@pytest.fixture(scope="module")
def rendered():
    return MeshModality(**SMALL).render(_mesh())[0]


def test_the_in_memory_official_views_are_what_the_files_give(tmp_path, rendered):
    memory = to_official_views(rendered)
    files = load_views(write_views(rendered, tmp_path / "views"))
    assert memory.names == files.names
    for a, b in zip(memory.images, files.images, strict=True):
        assert a.dtype == b.dtype == np.uint8 and np.array_equal(a, b)
    assert torch.equal(memory.depth, files.depth)
    assert torch.equal(memory.c2w, files.c2w)
    assert torch.equal(memory.fov_x, files.fov_x)


def test_every_raw_sample_is_packed_by_the_official_rule(tmp_path, rendered):
    official = MeshModality(**SMALL, packing="official")
    folder = write_views(rendered, tmp_path / "views")
    packed = voxel_features(load_views(folder), resolution=16)
    want = packed.feats.half().float()  # [M, 768] through float16, as the script stores them
    for sample in (_mesh(), rendered, str(folder), load_views(folder)):
        values, coords, meta = official.patchify(sample)
        assert meta["axes"] == "yxz"
        assert torch.equal(coords[:, 0], torch.zeros(len(coords), dtype=torch.int32))
        assert torch.equal(coords[:, [2, 1, 3]], packed.coords)  # (0, y, x, z)
        torch.testing.assert_close(values[:, :768], want, atol=0, rtol=0)
        assert not values[:, 768:].any()  # temporal slots 1..3 are zero
    plain = MeshModality(**SMALL)
    values, coords, meta = plain.patchify(rendered)
    assert "axes" not in meta
    same_voxels = torch.equal(coords[:, 1:], packed.coords)  # (0, x, y, z)
    assert not (same_voxels and torch.equal(values[:, :768], want))  # atoken's rule is another


def test_the_official_axes_round_trip_and_switch_the_position_table_on():
    official, plain = MeshModality(packing="official"), MeshModality()
    assert official.uses_pos_table and not plain.uses_pos_table
    assert not MeshModality.uses_pos_table  # the class keeps atoken's default
    for voxels in official.examples(0):
        back = official.unpatchify(*official.patchify(voxels))
        assert torch.equal(back.coords, voxels.coords) and torch.equal(back.patches, voxels.patches)


def test_an_unknown_packing_or_axes_is_refused():
    with pytest.raises(ModalityInputError, match="packing must be one of"):
        MeshModality(packing="trellis")
    voxels = MeshModality().examples(0)[0]
    values, coords, meta = MeshModality().patchify(voxels)
    with pytest.raises(ModalityInputError, match="axes"):
        MeshModality().unpatchify(values, coords, {**meta, "axes": "zyx"})


def _latent(voxels: Voxels, axes: str) -> SparseLatent:
    columns = voxels.coords if axes == "xyz" else voxels.coords[:, [1, 0, 2]]
    coords = torch.cat([torch.zeros(len(voxels), 1, dtype=torch.int32), columns.int()], 1)
    meta = {
        "resolution": voxels.resolution,
        "patch": 16,
        **({"axes": axes} if axes != "xyz" else {}),
    }
    return SparseLatent(
        feats=torch.zeros(len(voxels), 4), coords=coords,
        seqlens=torch.tensor([len(voxels)]), modality=("mesh",), meta=[meta],
    )  # fmt: skip


def test_heads_place_gaussians_at_the_voxel_whatever_the_axes():
    voxels = MeshModality().examples(1)[1]
    plain, swapped = _latent(voxels, "xyz"), _latent(voxels, "yxz")
    assert torch.equal(latent_voxels(swapped), voxels.coords.int())
    assert torch.equal(sample_coords(swapped), sample_coords(plain))
    head = GaussianHead(width=8, gaussians_per_voxel=2)
    raw = torch.randn(len(voxels), 28, generator=torch.Generator().manual_seed(0))
    (a,), (b,) = (head.to_samples(raw, lat, None) for lat in (plain, swapped))
    torch.testing.assert_close(a.means, b.means)
    # the check can fail: without the axes in meta the swapped columns land elsewhere
    unmarked = _latent(voxels, "yxz")
    unmarked.meta[0].pop("axes")
    (c,) = head.to_samples(raw, unmarked, None)
    assert not torch.allclose(a.means, c.means)


def test_from_official_encodes_3d_assets_by_the_official_rule(tmp_path):
    state = official_state_dict(width=64, heads=2, depth=1, mlp=96, seed=1)
    tok = atoken.Tokenizer.from_official(state, heads=2, modalities=["image", "mesh"])
    assert tok.config.modality_params["mesh"]["packing"] == "official"
    assert tok.config.heads["mesh"] == "pixels"  # the official decoder's patches
    tok.save_pretrained(tmp_path / "tok")
    again = atoken.Tokenizer.from_pretrained(tmp_path / "tok")
    assert again.modality("mesh").packing == "official" and again.modality("mesh").uses_pos_table
    voxels = MeshModality().examples(2)[0]
    with torch.no_grad():
        (decoded,) = again.reconstruct([voxels], "mesh")
    assert isinstance(decoded, Voxels) and torch.equal(decoded.coords, voxels.coords)


def test_a_folder_of_official_view_folders_gives_one_sample_per_asset(tmp_path, rendered):
    from atoken.data.modality_files import ModalityFiles

    mod = MeshModality(**SMALL)
    data = tmp_path / "data"
    for name in ("duck", "lamp/a"):
        write_views(rendered, data / name)
    _mesh().export(data / "box.ply")
    files = ModalityFiles(data, mod)
    assert files.names == ("box.ply", "duck", "lamp/a")  # nothing inside a views folder
    assert ModalityFiles(data / "duck", mod).names == ("duck",)  # the folder is one sample
    coords = mod.patchify(files[1])[1]
    assert torch.equal(coords, mod.patchify(rendered)[1])


def test_a_patch_that_does_not_divide_the_official_images_is_refused():
    with pytest.raises(ModalityInputError, match="patch_size 24 does not divide"):
        MeshModality(packing="official", patch_size=24)
    MeshModality(patch_size=24)  # atoken's packing takes any patch


def test_the_configs_own_packing_wins_over_the_official_one():
    state = official_state_dict(width=64, heads=2, depth=1, mlp=96, seed=1)
    cfg = atoken.official.infer_config(state, heads=2, modalities=("image", "mesh"))
    mine = cfg.with_overrides(modality_params={"mesh": {"packing": "atoken", "resolution": 32}})
    tok = atoken.Tokenizer.from_official(state, mine)
    assert tok.modality("mesh").packing == "atoken" and tok.modality("mesh").resolution == 32


def test_reconstruct_explains_folders_and_a_head_without_gaussians(tmp_path):
    from click.testing import CliRunner

    from atoken.cli import main
    from atoken.cli.files import file_modality
    from atoken.core.errors import DataModalityError

    state = official_state_dict(width=64, heads=2, depth=1, mlp=96, seed=1)
    tok = atoken.Tokenizer.from_official(state, heads=2, modalities=["image", "mesh"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataModalityError, match=r"official 3D layout .* not this folder"):
        file_modality(str(tmp_path / "empty"), "mesh", tok)
    tok.save_pretrained(tmp_path / "tok")
    _mesh().export(tmp_path / "box.ply")
    args = ["reconstruct", "--checkpoint", str(tmp_path / "tok"), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "box.ply")])
    assert result.exit_code != 0 and not isinstance(result.exception, ModalityInputError)
    assert "--gaussian-decoder" in result.output, result.output  # a message, not a traceback
