"""The occupancy example plugin: an xyz modality with its own head and loss, end to end.

Shapes: grids [X, Y, Z] 0/1; tokens are the non-empty 4 x 4 x 4 blocks, values [n, 64],
coords int32 [n, 4] = (0, x, y, z); decoded grids [X, Y, Z] probabilities in [0, 1].
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from atoken_example_occupancy import OccupancyBCELoss, OccupancyHead, OccupancyModality
from atoken_example_occupancy import modality as modality_module

import atoken
from atoken.plugins.heads import PixelHead
from atoken.testing.contracts import LossContract, ModalityContract


def _grid(shape: tuple[int, int, int], density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < density).float()  # [X, Y, Z]


def _blocks(grid: torch.Tensor, b: int) -> dict[tuple[int, int, int], torch.Tensor]:
    """Oracle by loops: block index -> its b**3 voxels (zero-padded, (bx, by, bz) order), for
    the non-empty blocks."""
    X, Y, Z = grid.shape
    out = {}
    for x in range(-(-X // b)):
        for y in range(-(-Y // b)):
            for z in range(-(-Z // b)):
                block = torch.zeros(b, b, b)
                part = grid[x * b : (x + 1) * b, y * b : (y + 1) * b, z * b : (z + 1) * b]
                block[: part.shape[0], : part.shape[1], : part.shape[2]] = part
                if bool(block.any()):
                    out[(x, y, z)] = block.flatten()  # [b**3]
    return out


@pytest.fixture
def tok() -> atoken.Tokenizer:
    """The tiny tokenizer in eval mode with random (not zero) head weights, so decoded
    outputs differ from voxel to voxel."""
    torch.manual_seed(0)
    tok = atoken.Tokenizer.from_preset("tiny", modalities=["image", "occupancy"])
    with torch.no_grad():
        for head in (tok.head, tok.heads["occupancy"]):
            head.proj.weight.normal_(std=0.05)
    return tok


@pytest.fixture
def grids() -> list[torch.Tensor]:
    return [_grid((5, 6, 7), 0.2, 0), _grid((8, 8, 8), 0.1, 1), torch.zeros(3, 9, 2)]


# ---------------------------------------------------------------------------- discovery
def test_discovered_through_its_entry_point():
    eps = [e for e in metadata.entry_points(group="atoken") if e.name == "occupancy"]
    assert eps and eps[0].dist.name == "atoken-example-occupancy"
    registry = atoken.get_registry()
    assert registry.modalities.plugin_of("occupancy") == "occupancy"
    assert registry.heads.plugin_of("occupancy") == "occupancy"
    assert registry.losses.plugin_of("occupancy_bce") == "occupancy"


def test_modality_code_is_under_150_lines():
    assert len(Path(modality_module.__file__).read_text().splitlines()) < 150


# ---------------------------------------------------------------------------- contracts
class TestOccupancyContract(ModalityContract):
    modality_name = "occupancy"


class TestOccupancyBCEContract(LossContract):
    loss_name = "occupancy_bce"


# ---------------------------------------------------------------------------- modality
def test_declares_xyz_layout_own_head_and_normalisation():
    mod = atoken.get_registry().modalities.create("occupancy", block=3)
    assert (mod.layout, mod.sample_ndim, mod.uses_pos_table) == ("xyz", 3, False)
    assert mod.default_head == "occupancy" and mod.value_dim == 27
    raw = torch.tensor([[0.0, 1.0] * 13 + [0.0]])  # [1, 27]
    assert torch.equal(mod.normalize(raw), raw * 2 - 1)
    assert torch.equal(mod.denormalize(mod.normalize(raw)), raw)


@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("shape", [(5, 6, 7), (8, 8, 8), (1, 1, 1), (9, 2, 4)])
def test_tokens_are_the_non_empty_blocks(block, shape):
    grid = _grid(shape, 0.15, sum(shape) + block)
    values, coords, meta = OccupancyModality(block=block).patchify(grid)
    oracle = _blocks(grid, block)
    assert values.shape == (len(oracle), block**3) and values.dtype == torch.float32
    assert coords.dtype == torch.int32 and bool((coords[:, 0] == 0).all())
    got = {tuple(c[1:].tolist()): v for c, v in zip(coords, values, strict=True)}
    assert got.keys() == oracle.keys()
    assert all(torch.equal(got[k], oracle[k]) for k in oracle)
    grid_shape = [-(-s // block) for s in shape]
    assert meta == {"size": list(shape), "grid": grid_shape, "block": block}
    perm = torch.randperm(values.shape[0], generator=torch.Generator().manual_seed(0))
    restored = OccupancyModality(block=block).unpatchify(values[perm], coords[perm], meta)
    assert torch.equal(restored, grid)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32, torch.float64])
def test_accepts_bool_uint8_and_float_grids(dtype):
    grid = _grid((6, 5, 4), 0.3, 7)
    values, coords, meta = OccupancyModality().patchify(grid.to(dtype))
    restored = OccupancyModality().unpatchify(values, coords, meta)
    assert restored.dtype == torch.float32 and torch.equal(restored, grid)


def test_empty_grid_gives_no_tokens_and_round_trips_to_zeros():
    mod = OccupancyModality()
    values, coords, meta = mod.patchify(torch.zeros(5, 3, 9, dtype=torch.bool))
    assert values.shape == (0, 64) and coords.shape == (0, 4)
    assert torch.equal(mod.unpatchify(values, coords, meta), torch.zeros(5, 3, 9))


def test_too_many_tokens_raises():
    grid = torch.zeros(8, 4, 4)
    grid[0, 0, 0] = grid[7, 3, 3] = 1  # two non-empty blocks
    assert OccupancyModality(max_tokens=2).patchify(grid)[0].shape[0] == 2
    with pytest.raises(atoken.TooManyTokensError):
        OccupancyModality(max_tokens=1).patchify(grid)


@pytest.mark.parametrize("params", [{"block": 0}, {"block": 2.0}, {"max_tokens": 0}])
def test_bad_parameters_raise(params):
    with pytest.raises(atoken.ModalityInputError):
        OccupancyModality(**params)


# ---------------------------------------------------------------------------- head and loss
def test_head_gives_logits_and_probability_grids():
    mod = OccupancyModality(block=2)
    head = OccupancyHead(width=16, value_dim=mod.value_dim)
    with torch.no_grad():
        head.proj.weight.normal_()
    samples = [_grid((3, 4, 5), 0.4, 0), _grid((2, 2, 2), 0.5, 1)]
    latent = mod.pack(samples)
    tokens = torch.randn(latent.num_tokens, 16)  # [N, width]
    logits = head(tokens, latent)
    assert logits.shape == (latent.num_tokens, mod.value_dim)
    out = head.to_samples(logits, latent, mod)
    assert [o.shape for o in out] == [s.shape for s in samples]
    assert all(bool(((o >= 0) & (o <= 1)).all()) for o in out)
    sum(o.sum() for o in out).backward()
    assert head.proj.weight.grad is not None and bool(head.proj.weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("pos_weight", [1.0, 3.0])
def test_loss_matches_torch_bce(pos_weight):
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(4, 5, 6, generator=g), torch.randn(2, 3, 1, generator=g)]
    targets = [_grid((4, 5, 6), 0.3, 1), _grid((2, 3, 1), 0.5, 2).bool()]
    got = OccupancyBCELoss(pos_weight=pos_weight)([torch.sigmoid(v) for v in logits], targets, {})
    flat_logits = torch.cat([v.flatten() for v in logits])
    flat_targets = torch.cat([t.flatten().float() for t in targets])
    expected = F.binary_cross_entropy_with_logits(
        flat_logits, flat_targets, pos_weight=torch.tensor(pos_weight)
    )  # mean over all voxels of all samples
    assert torch.allclose(got, expected, atol=1e-5)
    batch = OccupancyBCELoss()(torch.sigmoid(logits[0])[None], targets[0][None], {})
    assert torch.allclose(batch, F.binary_cross_entropy_with_logits(logits[0], targets[0]))


def test_loss_is_finite_at_certain_predictions():
    target = _grid((4, 4, 4), 0.5, 3)
    assert float(OccupancyBCELoss()(target.clone(), target, {})) < 1e-4
    assert torch.isfinite(OccupancyBCELoss()(1 - target, target, {}))


@pytest.mark.parametrize(
    ("prediction", "target"),
    [
        ([torch.rand(4, 4, 4)], [torch.zeros(4, 4, 5)]),
        (torch.rand(2, 4, 4, 4), torch.zeros(2, 4, 4, 3)),
        ([torch.rand(2, 2, 2)], [torch.zeros(2, 2, 2), torch.zeros(2, 2, 2)]),
        ([], []),
        ("grid", "grid"),
    ],
)
def test_loss_rejects_mismatched_inputs(prediction, target):
    with pytest.raises(atoken.ModalityInputError):
        OccupancyBCELoss()(prediction, target, {})


# ---------------------------------------------------------------------------- tokenizer
def test_tokenizer_builds_own_projection_and_head(tok):
    assert "occupancy" in tok.config.modalities
    assert "occupancy" in tok.projections.inputs
    head = tok.heads["occupancy"]
    assert isinstance(head, OccupancyHead) and tok.head_for("occupancy") is head
    assert (head.width, head.value_dim) == (tok.config.decoder.width, 64)
    assert isinstance(tok.head_for("image"), PixelHead)


def test_encode_decode_round_trips_shapes_and_range(tok, grids):
    with torch.no_grad():
        latent = tok.encode(grids, modality="occupancy")
        out = tok.decode(latent)
    assert latent.modality == ("occupancy",) * 3
    assert latent.feats.shape == (latent.num_tokens, tok.config.latent_dim)
    assert [o.shape for o in out] == [g.shape for g in grids]
    assert all(o.dtype == torch.float32 and bool(((o >= 0) & (o <= 1)).all()) for o in out)
    assert out[0].unique().numel() > 2  # the random head: per-voxel probabilities
    assert torch.equal(out[2], torch.zeros(3, 9, 2))  # no tokens: zeros


def test_a_batch_tensor_is_a_batch_of_grids(tok):
    batch = torch.stack([_grid((4, 8, 4), 0.3, s) for s in range(2)])  # [2, 4, 8, 4]
    with torch.no_grad():
        out = tok.decode(tok.encode(batch, modality="occupancy"))
    assert [o.shape for o in out] == [(4, 8, 4)] * 2


def test_latent_coords_are_block_indices_at_t0(tok, grids):
    with torch.no_grad():
        latent = tok.encode(grids, modality="occupancy")
    for part, grid in zip(latent.unpack(), grids, strict=True):
        assert bool((part.coords[:, 0] == 0).all())
        assert {tuple(c[1:].tolist()) for c in part.coords} == _blocks(grid, 4).keys()
    assert latent.seqlens.tolist() == [len(_blocks(g, 4)) for g in grids]


def test_mixed_batch_decodes_each_with_its_own_head(tok, grids):
    image = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mixed = tok.encode([image, grids[0]], modality=["image", "occupancy"])
        out = tok.decode(mixed)
        alone = tok.decode(tok.encode([grids[0]], modality="occupancy"))[0]
    assert mixed.modality == ("image", "occupancy")
    assert out[0].shape == (3, 32, 48)
    assert out[1].shape == (5, 6, 7) and bool(((out[1] >= 0) & (out[1] <= 1)).all())
    assert torch.allclose(out[1], alone, atol=1e-5)  # samples do not attend to each other


def test_embed_gives_finite_rows_without_the_position_table(tok, grids):
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb = tok.embed(grids[:2], modality="occupancy")
        image_emb = tok.embed([image], modality="image")
        # uses_pos_table = False: voxels ignore the 2D table, images do not
        tok.encoder.pos_table.weight.normal_(generator=torch.Generator().manual_seed(0))
        assert torch.allclose(tok.embed(grids[:2], modality="occupancy"), emb, atol=1e-6)
        assert not torch.allclose(tok.embed([image], modality="image"), image_emb, atol=1e-3)
    assert emb.shape == (2, tok.encoder.width) and bool(torch.isfinite(emb).all())
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_save_and_load_reproduce_decode(tok, grids, tmp_path):
    with torch.no_grad():
        latent = tok.encode(grids, modality="occupancy")
        before = tok.decode(latent)
    tok.save_pretrained(tmp_path / "occ")
    loaded = atoken.Tokenizer.from_pretrained(tmp_path / "occ").eval()
    assert isinstance(loaded.heads["occupancy"], OccupancyHead)
    with torch.no_grad():
        after = loaded.decode(latent)
        again = loaded.decode(loaded.encode(grids, modality="occupancy"))
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, again, strict=True))


@pytest.fixture
def one_thread():
    """One intra-op thread: for a model this small, more threads on a busy machine mostly wait
    for each other (several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_own_head_and_loss_learn_two_grids(one_thread):
    torch.manual_seed(0)
    tok = atoken.Tokenizer.from_preset("tiny", modalities=["image", "occupancy"]).train()
    grids = [_grid((8, 8, 8), 0.3, 0), _grid((6, 7, 5), 0.3, 1)]
    loss_fn = atoken.get_registry().losses.create("occupancy_bce")
    opt = torch.optim.Adam(tok.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        recon = tok.autoencode(grids, "occupancy")[0]
        loss = loss_fn(recon, grids, {})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # zero-initialised head: p = 0.5
    assert losses[-1] < 0.5 * losses[0]
