"""Walk budgets (#30 item 7): how far an encode -> decode wanders through the source folders.

The figures come from :func:`atoken.testing.walks.trace_walk` (distinct caller -> callee edges
between the repository's functions; property reads left out). Before the model had one owner,
an image round trip on ``tiny`` crossed folders 26 times, 12 of them into another module's
private members and 4 from ``core/`` back up into ``atoken/``.
"""

from __future__ import annotations

import pytest
import torch

import atoken
from atoken.testing.walks import Edge, Walk, trace_walk

#: Most folder crossings an image encode -> decode may take (today: 10).
IMAGE_BUDGET = 12
#: Most for a 48-frame clip encoded and decoded in 16-frame tiles (today: 13).
CLIP_BUDGET = 14


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return atoken.create_tokenizer("tiny")


def _walk(tok, samples, modality):
    round_trip = lambda: tok.decode(tok.encode(samples, modality))  # noqa: E731
    with torch.no_grad():
        round_trip()  # warm: the attention backend is chosen once per device
        return trace_walk(round_trip)


def test_an_image_round_trip_stays_within_its_budget(tok):
    walk = _walk(tok, [torch.rand(3, 64, 64)], "image")
    print(walk.report())
    assert len(walk.edges) > 50, "the tracer saw the walk"  # the budget is not vacuous
    assert len(walk.crossings) <= IMAGE_BUDGET, walk.report()
    assert not walk.private, walk.report()
    assert not walk.upward, walk.report()


def test_a_tiled_clip_round_trip_stays_within_its_budget(tok):
    walk = _walk(tok, [torch.rand(3, 48, 32, 32)], "video")
    print(walk.report())
    tiled = [e for e in walk.edges if e.callee.startswith("core/tiles.py")]
    assert tiled, "the clip went through the tiles"
    assert len(walk.crossings) <= CLIP_BUDGET, walk.report()
    assert not walk.private, walk.report()
    assert not walk.upward, walk.report()


def test_the_tracer_sees_calls_through_torch_and_classifies_edges(tok):
    """The checks above can fail: edges through ``nn.Module.__call__`` are seen, and a private
    call across modules or a call from core/ up into atoken/ is classified as such."""
    with torch.no_grad():
        walk = trace_walk(lambda: tok.encoder.pool(torch.zeros(2, 192), torch.tensor([2])))
    assert any(e.callee.endswith("MAPHead.forward") for e in walk.edges), walk.report()
    edges = {
        Edge("core/model.py:f", "atoken/x.py:_g", "core", "atoken", "core/model.py",
             "atoken/x.py", "_g"),
        Edge("core/a.py:f", "core/b.py:__init__", "core", "core", "core/a.py", "core/b.py",
             "__init__"),
    }  # fmt: skip
    made = Walk(frozenset(edges))
    assert [str(e) for e in made.private] == ["core/model.py:f -> atoken/x.py:_g"]
    assert len(made.upward) == 1 and len(made.crossings) == 1
