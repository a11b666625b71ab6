"""The epoch order of indexed sources: every sample once per epoch over all ranks, and a run
resumed on another number of processes or batch size goes on at the exact next position."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoken.core.errors import ConfigError
from atoken.data.epoch_order import EpochOrder


def _orders(n: int, world: int, batch: int, accum: int) -> list[EpochOrder]:
    return [
        EpochOrder(n, batch_size=batch, seed=5, rank=r, world_size=world, micro_steps=accum)
        for r in range(world)
    ]


def _drawn(orders: list[EpochOrder], steps: range, accum: int) -> list[int]:
    return [
        g
        for step in steps
        for micro in range(accum)
        for order in orders
        for g in order.positions(step, micro)
    ]


@given(
    st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),
    st.integers(1, 2), st.integers(0, 5), st.integers(1, 5),
)  # fmt: skip
def test_a_resume_on_other_ranks_goes_on_at_the_next_position(
    world_a, world_b, batch_a, batch_b, accum, cut, more
):
    """Run A draws to step ``cut`` and is checkpointed; run B (another world size or batch
    size) rebases on A's ``consumed`` and goes on: together they draw every position once, in
    order, so an epoch has no duplicate and no gap across the change."""
    a = _orders(11, world_a, batch_a, accum)
    before = _drawn(a, range(cut), accum)
    position = a[0].consumed(cut)
    assert all(order.consumed(cut) == position for order in a)  # the same on every rank
    b = _orders(11, world_b, batch_b, accum)
    for order in b:
        order.rebase(cut, position)
    after = _drawn(b, range(cut, cut + more), accum)
    assert before + after == list(range(len(before) + len(after)))
    samples = [b[0].sample(g) for g in range(22)]  # two epochs of 11: each sample twice
    assert sorted(samples) == sorted(list(range(11)) * 2)


def test_without_a_rebase_the_step_alone_places_a_batch():
    two = _orders(7, 2, 3, 1)
    assert list(two[1].positions(4, 0)) == [27, 28, 29]  # (4 * 2 + 1) * 3
    one = _orders(7, 1, 3, 1)[0]
    assert list(one.positions(4, 0)) == [12, 13, 14]  # another world: another position
    one.rebase(4, two[0].consumed(4))
    assert list(one.positions(4, 0)) == [24, 25, 26]  # rank 0 of two would draw 24-26 next
    with pytest.raises(ConfigError, match="position"):
        one.rebase(-1, 0)
