"""The test kit's data strategies, used as a plugin author would: layouts of ``sparse_latents``,
meshes and voxels through the mesh modality, occupancy grids through the coordinate code (and
the example ``occupancy`` plugin), FSQ levels through the FSQ bottleneck."""

from __future__ import annotations

import inspect
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import atoken
from atoken.core.coords import (
    LAYOUTS,
    gather_from_grid,
    grid_index,
    raster_coords,
    scatter_to_grid,
)
from atoken.core.errors import TooManyTokensError
from atoken.factory import build_bottleneck, resolve_config
from atoken.modalities.mesh import MeshModality, load_mesh
from atoken.plugins.bottlenecks.fsq import MAX_CODEBOOK, FSQBottleneck
from atoken.testing.strategies import (
    coords4d,
    fsq_levels,
    meshes,
    occupancy_grids,
    sparse_latents,
    voxels,
)

FEW = settings(max_examples=15, deadline=None)
UNIT4 = st.floats(-4, 4, allow_nan=False, width=32)


def _raises_invalid(strategy: st.SearchStrategy) -> None:
    @settings(max_examples=1, deadline=None)
    @given(strategy)
    def draw(value):
        pass

    with pytest.raises(InvalidArgument):
        draw()


# --------------------------------------------------------------------------- sparse_latents
@FEW
@given(st.sampled_from(sorted(LAYOUTS)), st.data())
def test_sparse_latents_of_a_layout_fit_its_grid(layout, data):
    latent = data.draw(sparse_latents(axes=layout, max_coord=5, max_samples=3))
    unused = [c for c in range(4) if c not in LAYOUTS[layout]]
    assert not bool(latent.coords[:, unused].any())
    for part in latent.unpack():
        grid, occupancy = scatter_to_grid(part.feats, part.coords, (5, 5, 5), layout=layout)
        assert int(occupancy.sum()) == part.num_tokens  # unique cells
        assert torch.equal(gather_from_grid(grid, part.coords, layout=layout), part.feats)


@FEW
@given(sparse_latents(axes="xyz", modalities=["mesh"], min_samples=1))
def test_sparse_latents_take_the_modality_names_given(latent):
    assert set(latent.modality) == {"mesh"}
    assert not bool(latent.coords[:, 0].any())  # xyz: t = 0


@FEW
@given(sparse_latents())
def test_sparse_latents_default_to_names_of_no_plugin(latent):
    default = inspect.signature(sparse_latents).parameters["modalities"].default
    assert not set(default) & set(atoken.get_registry().modalities.names())
    assert set(latent.modality) <= set(default)


@FEW
@given(coords4d(axes="thw", max_coord=4))
def test_coords4d_takes_a_layout_name(coords):
    assert not bool(coords[:, 3].any())
    flat = grid_index(coords, (4, 4, 4), layout="thw")
    assert flat.unique().numel() == coords.shape[0]


@pytest.mark.parametrize("axes", ["tzyx", "", (), (0, 0), (4,)])
def test_unknown_axes_are_invalid_arguments(axes):
    _raises_invalid(sparse_latents(axes=axes))


def test_empty_modalities_are_invalid_arguments():
    _raises_invalid(sparse_latents(modalities=[]))


# --------------------------------------------------------------------------- meshes
@pytest.fixture(scope="module")
def small_mesh_modality():
    return MeshModality(patch_size=4, temporal_patch=2, resolution=8, views=2, render_size=32)


@settings(max_examples=10, deadline=None)
@given(mesh=meshes())
def test_meshes_patchify_to_voxels_inside_their_box(small_mesh_modality, mesh):
    mod = small_mesh_modality
    values, coords, meta = mod.patchify(mesh)  # [n, 2 * 4 * 4 * 3], [n, 4]
    n = values.shape[0]
    assert n >= 1 and values.shape == (n, mod.value_dim) and coords.dtype == torch.int32
    assert (
        bool(torch.isfinite(values).all()) and 0 <= float(values.min()) <= float(values.max()) <= 1
    )
    assert not bool(coords[:, 0].any()) and int(coords.min()) >= 0 and int(coords.max()) < 8
    assert torch.unique(coords, dim=0).shape[0] == n
    # the mesh is normalised by the centre and scale the meta records
    original = np.asarray(mesh.vertices)
    normalised = (original - np.asarray(meta["center"])) * meta["scale"]
    lo, hi = normalised.min(0), normalised.max(0)
    assert (
        np.all(lo >= -0.5) and np.all(hi <= 0.5) and math.isclose((hi - lo).max(), 1, abs_tol=1e-3)
    )
    np.testing.assert_allclose(load_mesh(mesh).mesh.vertices, normalised, atol=1e-9)
    # each active voxel's cell meets the normalised mesh's bounding box
    cell_lo = coords[:, 1:].double().numpy() / 8 - 0.5  # [n, 3]
    assert np.all(cell_lo <= hi + 1e-6) and np.all(cell_lo + 1 / 8 >= lo - 1e-6)
    # the canonical sample patchifies back to the same tokens
    again = mod.patchify(mod.unpatchify(values, coords, meta))
    assert torch.equal(again[0], values) and torch.equal(again[1], coords)


@settings(max_examples=10, deadline=None)
@given(mesh=meshes(colors=False, max_stretch=1.0))
def test_meshes_are_closed_and_enclose_a_volume(mesh):
    assert mesh.is_watertight and mesh.volume > 0
    assert mesh.visual.kind is None  # colors=False: trimesh's grey


def test_mesh_arguments_are_checked():
    _raises_invalid(meshes(min_radius=0))
    _raises_invalid(meshes(max_stretch=0.5))


# --------------------------------------------------------------------------- voxels
@FEW
@given(v=voxels(patch_size=3, max_resolution=6))
def test_voxels_round_trip_through_the_mesh_modality(v):
    mod = MeshModality(patch_size=3, temporal_patch=2, resolution=v.resolution, render_size=32)
    values, coords, meta = mod.patchify(v)  # [n, 2 * 3 * 3 * 3], [n, 4]
    assert values.shape == (len(v), mod.value_dim) and not bool(values[:, 27:].any())
    back = mod.unpatchify(values, coords, meta)
    assert back.resolution == v.resolution and torch.equal(back.as_tensor(), v.as_tensor())
    R = v.resolution
    grid, occupancy = scatter_to_grid(values, coords, (R, R, R), layout="xyz")
    assert int(occupancy.sum()) == len(v)
    assert bool(occupancy[tuple(v.coords.long().T)].all())
    assert torch.equal(gather_from_grid(grid, coords, layout="xyz"), values)


@FEW
@given(v=voxels(resolution=4, patch_size=2, min_voxels=2))
def test_voxels_over_max_tokens_are_refused(v):
    mod = MeshModality(patch_size=2, resolution=4, render_size=32, max_tokens=len(v) - 1)
    with pytest.raises(TooManyTokensError):
        mod.patchify(v)


def test_voxel_arguments_are_checked():
    _raises_invalid(voxels(resolution=2, min_voxels=9))
    _raises_invalid(voxels(patch_size=0))


# --------------------------------------------------------------------------- occupancy grids
@FEW
@given(occupancy_grids(max_side=6, dtype=torch.float32))
def test_occupancy_grids_scatter_to_themselves(grid):
    shape = tuple(grid.shape)
    assert set(grid.unique().tolist()) <= {0.0, 1.0}
    coords = raster_coords(shape, layout="xyz")[grid.flatten() != 0]  # [n, 4]
    ones = torch.ones(coords.shape[0], 1)
    dense, occupancy = scatter_to_grid(ones, coords, shape, layout="xyz")
    assert torch.equal(occupancy, grid.bool()) and torch.equal(dense[0], grid)


@FEW
@given(grid=occupancy_grids(max_side=9, dtype=torch.uint8))
def test_occupancy_grids_round_trip_through_the_example_plugin(grid):
    pytest.importorskip("atoken_example_occupancy")
    factory = atoken.get_registry().modalities.get("occupancy")
    mod = factory(block=4)
    values, coords, meta = mod.patchify(grid)
    assert values.shape[0] == len(torch.unique(coords, dim=0))
    assert torch.equal(mod.unpatchify(values, coords, meta), grid.float())


# --------------------------------------------------------------------------- FSQ levels
def _level_index(codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    half = (table // 2).double()  # [G, d]
    return (codes.double() * half + half).round().long()  # [N, G, d]


@settings(max_examples=25, deadline=None)
@given(params=fsq_levels(), data=st.data())
def test_fsq_levels_round_trip_ids_and_codes(params, data):
    fsq = FSQBottleneck(in_dim=4, **params)
    G = params["groups"]
    rows = params["levels"] if isinstance(params["levels"][0], list) else [params["levels"]] * G
    assert fsq.level_table.tolist() == rows and fsq.latent_dim == G * len(rows[0])
    assert fsq.codebook_sizes == [math.prod(r) for r in rows]
    assert max(fsq.codebook_sizes) <= MAX_CODEBOOK
    # ids -> codes -> ids, against an oracle in Python integers
    n = data.draw(st.integers(0, 4))
    ids = [[data.draw(st.integers(0, size - 1)) for size in fsq.codebook_sizes] for _ in range(n)]
    ids_t = torch.tensor(ids, dtype=torch.int32).reshape(n, G)
    codes = fsq.ids_to_codes(ids_t)  # [n, G * d]
    assert codes.shape == (n, fsq.latent_dim) and bool((codes.abs() <= 1).all())
    index = _level_index(codes.reshape(n, G, len(rows[0])), fsq.level_table)  # [n, G, d]
    for i in range(n):
        for g, row in enumerate(rows):
            digits = index[i, g].tolist()
            assert all(0 <= k < L for k, L in zip(digits, row, strict=True))
            assert sum(k * math.prod(row[:j]) for j, k in enumerate(digits)) == ids[i][g]
    # quantize gives ids whose codes are its codes
    z = torch.from_numpy(data.draw(hnp.arrays(np.float32, (n, fsq.latent_dim), elements=UNIT4)))
    z_q, ids_q = fsq.quantize(z)
    assert torch.equal(fsq.ids_to_codes(ids_q), z_q)


@FEW
@given(params=fsq_levels(per_group=False, max_groups=2))
def test_fsq_levels_are_accepted_by_a_tokenizer_config(params):
    assert all(level >= 3 for level in params["levels"])
    width = params["groups"] * len(params["levels"])
    config = resolve_config("tiny", bottleneck="fsq", bottleneck_params=params, latent_dim=width)
    assert build_bottleneck(config).latent_dim == width


@FEW
@given(params=fsq_levels(per_group=True, max_codebook=2**10))
def test_fsq_levels_stay_within_max_codebook(params):
    assert all(math.prod(row) <= 2**10 for row in params["levels"])
    assert len({len(row) for row in params["levels"]}) == 1


def test_fsq_level_arguments_are_checked():
    _raises_invalid(fsq_levels(max_codebook=MAX_CODEBOOK + 1))
    _raises_invalid(fsq_levels(per_group=False, max_codebook=2))
