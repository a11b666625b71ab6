"""3D data and training through the public entry points: `atoken data import meshes` into a
mesh store (resumable, checksummed, refusing foreign folders), the `meshes` source, and a few
`atoken train` steps of images + meshes whose exported tokenizer decodes a mesh file, also
through `atoken reconstruct`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.core.errors import StoreError, StoreIntegrityError
from atoken.data import SourceContext, build_source
from atoken.data.latent_store import LatentStore
from atoken.modalities.mesh import GaussianSet
from atoken.modalities.mesh.data import MeshSettings, MeshStore, import_meshes

pybullet_data = pytest.importorskip("pybullet_data")
DATA = Path(pybullet_data.getDataPath())
MESHES = [DATA / "duck.obj", DATA / "teddy2_VHACD_CHs.obj", DATA / "objects" / "mug.obj"]
SMALL = ["--views", "4", "--eval-views", "2", "--render-size", "48", "--resolution", "16"]


def _import(*args: str) -> str:
    result = CliRunner().invoke(main, ["data", "import", "meshes", "--no-progress", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_import_resumes_verifies_and_refuses_foreign_folders(tmp_path):
    dst = tmp_path / "meshes"
    out = _import(*SMALL, str(MESHES[0]), str(MESHES[1]), str(dst))
    assert "imported 2 meshes" in out
    out = _import(*SMALL, *map(str, MESHES), str(dst))  # a rerun adds only the new mesh
    assert "imported 1 meshes" in out and "2 already stored" in out
    store = MeshStore(dst)
    assert store.names == ("duck.obj", "teddy2_VHACD_CHs.obj", "objects/mug.obj")
    rec = store.record("duck.obj")
    assert rec.views.rgb.shape == (4, 3, 48, 48) and rec.eval_views.rgb.shape == (2, 3, 48, 48)
    assert rec.voxels.resolution == 16 and len(rec.voxels) > 50
    # the stored voxels are the modality's own voxelisation of the stored feature views
    again = atoken.get_registry().modalities.create("mesh", resolution=16).voxels(rec.views)[0]
    assert torch.equal(again.coords, rec.voxels.coords)
    assert float((again.patches - rec.voxels.patches).abs().max()) <= 0.5 / 255 + 1e-6
    # other settings, or a folder that is not a mesh store: refused, nothing written
    with pytest.raises(StoreError, match="other settings"):
        import_meshes(MESHES[:1], dst, settings=MeshSettings(views=8), progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a mesh store"):
        import_meshes(MESHES[:1], tmp_path / "notes", progress=False)
    assert os.listdir(tmp_path / "notes") == ["keep.txt"]
    # a flipped byte in the stored patches is found when the sample is read
    data = dst / "patches" / "data"
    shard = next(p for p in sorted(data.rglob("*")) if p.is_file())
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises((StoreIntegrityError, StoreError)):
        damaged = MeshStore(dst)
        for name in damaged.names:
            damaged.record(name)


def test_the_meshes_source_is_deterministic_and_sharded(tmp_path):
    import_meshes(MESHES, tmp_path / "m", settings=MeshSettings(views=4, eval_views=2,
                  render_size=48, resolution=16), progress=False)  # fmt: skip
    table = {"source": "meshes", "path": str(tmp_path / "m"), "views_per_step": 3}
    a = build_source(table, SourceContext(seed=1), where="t")
    b = build_source(table, SourceContext(seed=1), where="t")
    assert a.heldout_names == ("objects/mug.obj",)
    first, second = a.batch(5, 1)[0], b.batch(5, 1)[0]
    assert first.name == second.name and torch.equal(first.as_tensor(), second.as_tensor())
    assert first.views.count == 3
    shards = [build_source(table, SourceContext(seed=1, rank=r, world_size=2), where="t")
              for r in (0, 1)]  # fmt: skip
    assert set(shards[0].train).isdisjoint(shards[1].train)


@pytest.mark.slow
def test_atoken_train_images_and_meshes_then_decode_a_mesh_file(tmp_path):
    store = tmp_path / "meshes"
    _import(*SMALL, *map(str, MESHES), str(store))
    run = tmp_path / "mesh.toml"
    text = (Path(__file__).resolve().parents[2] / "configs" / "mesh.toml").read_text()
    text = text.replace('out_dir = "runs/mesh"', f'out_dir = "{tmp_path / "run"}"')
    text = text.replace('path = "data/meshes"', f'path = "{store}"')
    text = re.sub(r"heldout = \[[^\]]*\]", 'heldout = ["objects/mug.obj"]', text, flags=re.S)
    text = re.sub(r"\nsteps = \d+", "\nsteps = 4", text)
    text = re.sub(r"eval_every = \d+", "eval_every = 4", text)
    text = re.sub(r"warmup_steps = \d+", "warmup_steps = 1", text)
    text = text.replace("views_per_step = 4", "views_per_step = 2")
    run.write_text(text)
    result = CliRunner().invoke(main, ["train", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if x["kind"] == "eval"]
    assert evals and np.isfinite(evals[-1]["mesh_reconstruction/psnr"])
    assert "mesh_reconstruction/baseline_psnr" in evals[-1]
    trained = [x for x in lines if x["kind"] == "train"]
    assert all("mesh_reconstruction/l1" in x for x in trained)
    pictures = tmp_path / "run" / "mesh_reconstruction"
    assert (pictures / "mesh_step000004.png").is_file()
    assert (pictures / "mesh_step000004_objects_mug_turntable.gif").is_file()
    tok = atoken.Tokenizer.from_pretrained(tmp_path / "run" / "tokenizer").eval()
    with torch.no_grad():
        (gaussians,) = tok.reconstruct([str(MESHES[2])], "mesh")
    assert isinstance(gaussians, GaussianSet) and len(gaussians) > 0
    assert len(gaussians) % 8 == 0  # K = 8 Gaussians per voxel, from the run file
    out = tmp_path / "recon"
    result = CliRunner().invoke(
        main, ["reconstruct", "--checkpoint", str(tmp_path / "run"), "--out", str(out),
               str(MESHES[2])],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"mug\s+mesh\s+\d+ voxels\s+PSNR [\d.]+ dB", result.output), result.output
    saved = GaussianSet.load_ply(out / "mug_gaussians.ply")  # in the mesh's own units
    assert len(saved) == len(gaussians) and (out / "mug_side_by_side.png").is_file()
    mug = trimesh.load(MESHES[2], force="mesh", process=False)
    assert np.allclose(saved.means.mean(0).numpy(), mug.bounding_box.centroid, atol=0.3 * mug.scale)


def test_fsq_tokens_of_meshes_train_and_report_codebook_use(tmp_path):
    from atoken.engine.runconfig import LossTerm, TaskSpec
    from atoken.modalities.mesh.task import MeshReconstructionTask
    from atoken.tasks import TaskContext, build_task

    torch.manual_seed(0)
    tok = atoken.Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, bottleneck="fsq", latent_dim=48,
        bottleneck_params={"levels": [4] * 6, "groups": 8},
        head_params={"mesh": {"gaussians_per_voxel": 2}},
    )  # fmt: skip
    spec = TaskSpec(
        name="mesh_reconstruction",
        params={"previews": 0},
        data=MeshReconstructionTask.example_data(tmp_path),
        losses=(LossTerm(name="l1", weight=1.0), LossTerm(name="gaussian_opacity", weight=0.01)),
    )
    task = build_task(spec, TaskContext(model=tok))
    loss, logs = task.loss(tok, task.batch(0, 0))
    loss.backward()
    assert set(logs) == {"l1", "gaussian_opacity"} and 0 < logs["gaussian_opacity"] < 1
    with torch.no_grad():
        metrics = task.evaluate(tok.eval(), 1, tmp_path)
    assert 0 < metrics["codebook_usage"] <= 1 and metrics["codebook_perplexity"] >= 1
    assert {"psnr", "ssim", "baseline_psnr", "baseline_ssim"} <= set(metrics)


def test_atoken_encode_stores_the_latents_of_a_mesh_store(tmp_path):
    store = tmp_path / "meshes"
    _import(*SMALL, str(MESHES[0]), str(MESHES[1]), str(store))
    torch.manual_seed(0)
    tok = atoken.Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, head_params={"mesh": {"gaussians_per_voxel": 2}},
        modality_params={"mesh": {"resolution": 16, "render_size": 48, "views": 4}},
    ).eval()  # fmt: skip
    tok.save_pretrained(tmp_path / "tok")
    out = str(tmp_path / "latents.zarr")
    args = ["encode", "--checkpoint", str(tmp_path / "tok"), str(store), out, "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "encoded 2 samples (mesh)" in result.output
    latents = LatentStore(out)
    meta = latents.meta(range(2))
    assert [m["source"] for m in meta] == ["duck.obj", "teddy2_VHACD_CHs.obj"]
    records = [MeshStore(store).record(n) for n in ("duck.obj", "teddy2_VHACD_CHs.obj")]
    assert meta[0]["resolution"] == 16 and meta[0]["scale"] == pytest.approx(records[0].scale)
    with torch.no_grad():
        stored = tok.decode(latents.latents([0, 1]))
        direct = tok.reconstruct(records, "mesh")
    for a, b, rec in zip(stored, direct, records, strict=True):
        assert isinstance(a, GaussianSet) and len(a) == 2 * len(rec.voxels)
        rows = [torch.cat([g.means, g.colors], 1).numpy() for g in (a, b)]  # the store's order
        rows = [r[np.lexsort(r.T[::-1])] for r in rows]  # may differ: compare as sets
        assert np.allclose(rows[0], rows[1], atol=1e-5)
    wrong = CliRunner().invoke(main, [*args, "--modality", "image"])
    assert wrong.exit_code == 1 and "holds 'mesh' samples" in wrong.output
    # The store is recognised by the mesh family's MeshModality.open_store, whatever the
    # tokenizer lists: one built for images only refuses it by name (never reads it as a
    # folder of images).
    image_only = tmp_path / "image_only"
    atoken.Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, modalities=["image"]
    ).save_pretrained(image_only)
    args[2], args[4] = str(image_only), str(tmp_path / "again.zarr")
    lacking = CliRunner().invoke(main, [*args, "--dtype", "float32"])
    assert lacking.exit_code == 1, lacking.output
    assert "UnknownModalityError: this tokenizer has no modality 'mesh'" in lacking.output
