"""The point-cloud example plugin (docs/examples/atoken-example-pointcloud), installed like a
third party's: a set-valued modality trained by the generic ``reconstruction`` task with the
built-in ``chamfer`` loss, then ``atoken reconstruct``/``encode``/``eval`` on its ``.npy`` files.

Shapes: a cloud [n, 6] (xyz in [-1, 1], rgb in [0, 1]); tokens are the occupied voxels of an
8^3 grid, values [v, 24] (4 points a voxel); a decoded cloud [n', 6], n' any.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from atoken.cli import main
from atoken.data.sources import SourceContext
from atoken.losses.sets import chamfer_distance
from atoken.plugins.manager import get_registry
from atoken.testing.contracts import ModalityContract, same_sample
from atoken.testing.tokenizer_contracts import TokenizerRoundTripContract

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "atoken-example-pointcloud"
STEPS = 100


class TestPointCloudModality(ModalityContract):
    modality_name = "pointcloud"


class TestPointCloudThroughTheTokenizer(TokenizerRoundTripContract):
    modality_name = "pointcloud"


def test_the_plugin_is_under_300_lines_of_python():
    files = sorted((EXAMPLE / "atoken_example_pointcloud").glob("*.py"))
    lines = sum(len(f.read_text().splitlines()) for f in files)
    assert 0 < lines < 300, lines


def test_a_cloud_round_trips_as_a_set_and_a_prediction_may_change_its_size():
    mod = get_registry().modalities.create("pointcloud")
    cloud = mod.examples(5)[0]
    values, coords, meta = mod.patchify(cloud[torch.randperm(len(cloud))])
    assert same_sample(mod, mod.unpatchify(values, coords, meta), cloud)
    one = torch.tensor([[0.25, -0.5, 0.125, 1.0, 0.5, 0.0]])  # one point: 4 repeats, 1 token
    values, coords, meta = mod.patchify(one)
    assert values.shape == (1, 24) and torch.equal(mod.unpatchify(values, coords, meta), one)
    moved = values.clone()
    moved[:, 0::6] += 0.1  # every repeat's x alike: still one point
    assert len(mod.unpatchify(moved, coords, meta)) == 1
    moved[0, 6] += 0.2  # the second repeat moves on its own: a decoded set of two
    assert len(mod.unpatchify(moved, coords, meta)) == 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The example's run file, shortened to STEPS steps, trained through ``atoken train``."""
    folder = tmp_path_factory.mktemp("pointcloud")
    text = (EXAMPLE / "train.toml").read_text().replace("runs/pointcloud", str(folder / "out"))
    text = text.replace("steps = 300", f"steps = {STEPS}").replace("eval_every = 100", "")
    (folder / "run.toml").write_text(text)
    result = CliRunner().invoke(main, ["train", str(folder / "run.toml")])
    assert result.exit_code == 0, result.output
    return folder / "out"


def _source():
    factory = get_registry().data_sources.get("synthetic_clouds")
    return factory(context=SourceContext(), batch_size=8, points=256)


def test_the_generic_task_beats_the_mean_cloud_on_chamfer(trained):
    records = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["kind"] == "eval"][-1]
    source = _source()
    pool = torch.cat([c for step in range(8) for c in source.batch(step)])  # training clouds
    mean_cloud = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))[:256]]
    baseline = np.mean([float(chamfer_distance(mean_cloud, h)) for h in source.heldout])
    assert final["reconstruction/chamfer"] < 0.5 * baseline, (final, baseline)
    assert final["reconstruction/emd"] > 0
    assert (trained / "reconstruction" / f"recon_step{STEPS:06d}.png").is_file()  # its draw


def test_reconstruct_encode_and_eval_run_on_its_npy_files(trained, tmp_path):
    data = tmp_path / "clouds"
    data.mkdir()
    for name, cloud in zip(("a", "b"), _source().heldout, strict=False):
        np.save(data / f"{name}.npy", cloud.numpy())
    tok = str(trained / "tokenizer")
    run = CliRunner().invoke
    out = tmp_path / "recon"
    args = ["reconstruct", "--checkpoint", tok, "--out", str(out), "--modality", "pointcloud"]
    result = run(main, [*args, str(data / "a.npy"), str(data / "b.npy")])
    assert result.exit_code == 0, result.output
    assert "Chamfer" in result.output
    recon = np.load(out / "a_recon.npy")
    assert recon.ndim == 2 and recon.shape[1] == 6 and np.isfinite(recon).all()
    assert (out / "a_side_by_side.png").is_file()  # drawn by the modality's draw

    store = tmp_path / "latents.zarr"
    encoded = run(main, ["encode", "--checkpoint", tok, str(data), str(store), "--modality",
                         "pointcloud", "--no-progress"])  # fmt: skip
    assert encoded.exit_code == 0, encoded.output
    assert "encoded 2 samples (pointcloud)" in encoded.output

    scored = run(
        main, ["eval", "--checkpoint", tok, "--modality", "pointcloud", "--data", str(data)]
    )
    assert scored.exit_code == 0, scored.output
    rows = dict(line.split()[:2] for line in scored.output.splitlines() if line[:1].isalpha())
    assert {"chamfer", "emd"} <= set(rows), scored.output  # the metrics registered for sets
    assert float(rows["chamfer"]) < 0.2
