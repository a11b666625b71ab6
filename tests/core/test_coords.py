"""Raster coordinates and dense <-> sparse round trips."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from atoken import CoordinateError, gather_from_grid, raster_coords, scatter_to_grid
from atoken.core.coords import LAYOUTS, grid_index
from atoken.testing.strategies import coords4d

shapes = st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 6))
layouts = st.sampled_from(sorted(LAYOUTS))


@given(shapes, layouts)
def test_raster_coords_unique_complete_and_in_range(shape, layout):
    coords = raster_coords(shape, layout=layout)
    assert coords.dtype == torch.int32
    assert coords.shape == (int(np.prod(shape)), 4)
    flat = grid_index(coords, shape, layout=layout)
    # raster order: the i-th coordinate is cell i of the row-major grid
    assert torch.equal(flat, torch.arange(coords.shape[0]))


def test_raster_layout_conventions():
    thw = raster_coords((2, 2, 3), layout="thw")
    # t slowest, then row y, then column x; z = 0
    assert thw[:4].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0]]
    assert thw[6].tolist() == [1, 0, 0, 0]
    xyz = raster_coords((2, 1, 2), layout="xyz")
    assert xyz.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 1, 0, 1]]


@st.composite
def grids(draw):
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)))
    C = draw(st.integers(1, 3))
    unit = st.floats(-10, 10, allow_nan=False, width=32)
    return torch.from_numpy(draw(hnp.arrays(np.float32, (C, *shape), elements=unit)))


@given(grids(), layouts)
def test_dense_sparse_dense_round_trip(grid, layout):
    shape = tuple(grid.shape[1:])
    coords = raster_coords(shape, layout=layout)
    feats = gather_from_grid(grid, coords, layout=layout)
    assert feats.shape == (coords.shape[0], grid.shape[0])
    back, occupancy = scatter_to_grid(feats, coords, shape, layout=layout)
    assert torch.equal(back, grid) and bool(occupancy.all())


@given(coords4d(axes=(0, 1, 2), max_coord=5), st.integers(1, 3), st.data())
def test_sparse_dense_sparse_round_trip(coords, C, data):
    feats = torch.arange(coords.shape[0] * C, dtype=torch.float32).reshape(-1, C)
    shape = (5, 5, 5)  # thw grid covering coords in [0, 5)
    grid, occupancy = scatter_to_grid(feats, coords, shape, layout="thw", fill=-1.0)
    assert int(occupancy.sum()) == coords.shape[0]
    assert torch.equal(gather_from_grid(grid, coords, layout="thw"), feats)
    # empty cells keep the fill value
    assert bool((grid[:, ~occupancy] == -1.0).all())


def test_errors_are_typed():
    with pytest.raises(CoordinateError, match="layout"):
        raster_coords((1, 2, 2), layout="hw")
    with pytest.raises(CoordinateError, match="outside"):
        grid_index(torch.tensor([[0, 3, 0, 0]], dtype=torch.int32), (1, 2, 3), layout="thw")
    with pytest.raises(CoordinateError, match="to be 0"):
        grid_index(torch.tensor([[0, 0, 0, 1]], dtype=torch.int32), (1, 2, 2), layout="thw")
    with pytest.raises(CoordinateError, match="shape"):
        raster_coords((1, 2))
    with pytest.raises(CoordinateError, match="feats"):
        scatter_to_grid(torch.zeros(2, 1), torch.zeros(1, 4, dtype=torch.int32), (1, 1, 1))


@given(st.data())
def test_grid_index_is_exact_up_to_the_int64_limit(data):
    """Large grids (#33): the index equals Python's exact raster index, and a grid whose cells
    an int64 cannot number is refused rather than wrapped."""
    dims = tuple(data.draw(st.integers(1, 2**21), label=f"dim{i}") for i in range(3))
    point = [data.draw(st.integers(0, d - 1)) for d in dims]
    coords = torch.zeros(1, 4, dtype=torch.int64)
    for grid_axis, column in enumerate(LAYOUTS["xyz"]):  # grid axis i is coordinate column
        coords[0, column] = point[grid_axis]
    exact = (point[0] * dims[1] + point[1]) * dims[2] + point[2]
    assert int(grid_index(coords, dims, layout="xyz")[0]) == exact


def test_a_grid_too_large_for_int64_is_refused():
    coords = torch.tensor([[3, 0, 0, 0]], dtype=torch.int32)  # t = 3: grid axis 0 of "thw"
    with pytest.raises(CoordinateError, match="int64"):
        grid_index(coords, (4, 2**31, 2**31), layout="thw")  # 2^64 cells: 3 * 2^62 would wrap
    assert int(grid_index(coords, (4, 2**31, 2**30), layout="thw")[0]) == 3 * 2**61
