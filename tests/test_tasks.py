"""Tasks and data sources as registered components, composed by run files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.core.errors import ConfigError, DataModalityError
from atoken.data import MediaWriter
from atoken.engine.runconfig import load_run_file
from atoken.train import build_run, run_training

ROOT = Path(__file__).resolve().parents[1]
HEAD = """
[run]
out_dir = "{out}"
seed = 3
[model]
preset = "tiny"
overrides = {{ depth = 1, decoder_depth = 1 }}
modality_params = {{ depth = {{ depth_mean = 3.0, depth_std = 2.0 }} }}
[optim]
warmup_steps = 1
grad_accum = {accum}
[train]
steps = {steps}
precision = "fp32"
ema_decay = 0.9
checkpoint_every = 2
log_every = 1
progress = false
mixture = "{mixture}"
"""
IMAGE = """
[[tasks]]
name = "image_reconstruction"
data = { source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }
metrics = ["psnr"]
previews = 1
"""


def _write(tmp_path: Path, name: str, tasks: str, *, steps=4, accum=2, mixture="round_robin"):
    path = tmp_path / f"{name}.toml"
    head = HEAD.format(out=tmp_path / name, steps=steps, accum=accum, mixture=mixture)
    path.write_text(head + tasks)
    return path


@pytest.fixture(scope="module")
def depth_store(tmp_path_factory) -> str:
    """A float32 media store of depth maps ``[H, W]`` in metres."""
    url = str(tmp_path_factory.mktemp("stores") / "depth.zarr")
    g = np.random.default_rng(0)
    with MediaWriter(url, modality="depth", sample_axes=("H", "W"), dtype="float32") as w:
        for i in range(4):
            w.add(f"d{i}", (1 + 4 * g.random((40, 48))).astype(np.float32))
    return url


def depth_task(url: str) -> str:
    return f"""
[[tasks]]
name = "reconstruction"
label = "depth"
data = {{ source = "media_store", url = "{url}", batch_size = 1, crop_min = 32, crop_max = 32 }}
losses = [{{ name = "l1", weight = 1.0 }}, {{ name = "kl", weight = 1e-8 }}]
metrics = []
"""


def test_builtins_are_registered_through_the_hooks():
    reg = atoken.get_registry()
    tasks = {"reconstruction", "image_reconstruction", "video_reconstruction", "text_alignment"}
    assert tasks <= set(reg.tasks)
    assert {"photos", "image_folder", "digits", "video_files", "media_store"} <= set(
        reg.data_sources
    )
    assert reg.tasks.plugin_of("image_reconstruction") == "atoken.tasks.image"


def test_a_float_store_trains_with_the_generic_task(tmp_path, depth_store):
    """A float32 depth store (the modality it names) trains next to images, values unscaled."""
    cfg = load_run_file(_write(tmp_path, "mix", IMAGE + depth_task(depth_store)))
    tok, mixture = build_run(cfg)
    _, depth = mixture.tasks
    assert depth.modality == "depth" and depth.source.modality == "depth"
    crops = depth.batch(0, 0)
    assert crops[0].shape == (32, 32) and float(crops[0].max()) > 1.0  # metres, not /255
    assert [mixture.index(0, m) for m in range(2)] == [0, 1]  # round robin over micro-steps
    index, batch = mixture.batch(0, 1)
    loss, logs = mixture.loss(tok.train(), (index, batch))
    assert set(logs) == {"depth/l1", "depth/kl", "depth/loss"} and loss.ndim == 0


def test_mixed_run_resumes_exactly(tmp_path, depth_store):
    tasks = IMAGE + depth_task(depth_store)
    full, _ = run_training(load_run_file(_write(tmp_path, "full", tasks)))
    cut = _write(tmp_path, "cut", tasks)
    run_training(load_run_file(cut))
    ckpts = sorted((tmp_path / "cut" / "checkpoints").glob("step_*.pt"))
    ckpts[-1].unlink()  # as if the run had died after step 2
    resumed, metrics = run_training(load_run_file(cut), resume=True)
    assert resumed.losses == full.losses and len(full.losses) == 4
    assert "image_reconstruction/psnr" in metrics
    records = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # no step logged twice after the resume
    assert all("image_reconstruction/l1" in r and "depth/l1" in r for r in records[:1])


def test_weighted_mixture_is_deterministic_and_follows_the_weights(tmp_path, depth_store):
    tasks = IMAGE.replace("previews = 1", "previews = 1\nweight = 3.0") + depth_task(depth_store)
    cfg = load_run_file(_write(tmp_path, "w", tasks, accum=1, mixture="weighted"))
    _, mixture = build_run(cfg)
    picks = [mixture.index(step, 0) for step in range(400)]
    assert picks == [mixture.index(step, 0) for step in range(400)]
    assert 0.65 < picks.count(0) / 400 < 0.85  # weight 3 : 1


def test_a_store_of_another_modality_is_a_typed_error(tmp_path, depth_store):
    tasks = IMAGE.replace('source = "photos"', f'source = "media_store", url = "{depth_store}"')
    with pytest.raises(DataModalityError, match="'depth' samples"):
        build_run(load_run_file(_write(tmp_path, "bad", tasks)))


@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        (IMAGE.replace("previews = 1", "previws = 1"), "previws"),
        (IMAGE.replace("crop_max = 32", "crop_mx = 32"), r"crop_mx.*known: batch_size"),
        (IMAGE.replace('"image_reconstruction"', '"image_reconstrucion"'), "image_reconstruction"),
        (IMAGE.replace('"photos"', '"fotos"'), "photos"),
        (IMAGE + IMAGE, "distinct label"),
        (IMAGE.replace("metrics", 'losses = [{ name = "siglip" }]\nmetrics'), "embeddings"),
        (
            '[[tasks]]\nname = "reconstruction"\n',
            "name a data source",
        ),
    ],
)
def test_bad_task_tables_are_config_errors_that_say_what_to_write(tmp_path, tasks, match):
    with pytest.raises(ConfigError, match=match):
        build_run(load_run_file(_write(tmp_path, "bad", tasks)))


def test_old_style_run_file_says_how_to_write_it_now(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text(
        '[data]\nsource = "photos"\nbatch_size = 4\n[loss]\nrec_weight = 0.5\n'
        '[[loss.terms]]\nname = "mse"\n[video]\nenabled = true\nlatent_dim = 48\n'
    )
    with pytest.raises(ConfigError, match=r"\[\[tasks\]\]") as info:
        load_run_file(old)
    message = str(info.value)
    translated = message.split("with:\n\n", 1)[1]
    import tomllib

    new = tomllib.loads(translated)  # the suggestion is a valid run file fragment
    assert [t["name"] for t in new["tasks"]] == ["image_reconstruction", "video_reconstruction"]
    assert new["tasks"][0]["losses"][0] == {"name": "mse", "weight": 0.5}
    assert new["model"]["expand_latent"] == 48
    result = CliRunner().invoke(main, ["train", str(old)])
    assert result.exit_code == 1 and "[[tasks]]" in result.output


def _with_small_mesh_store(path: Path, tmp_path: Path) -> Path:
    """configs/mesh.toml reads data/meshes, made by a command it names: here a small store of
    its held-out objects and one training object stands in (48 px, 4 views, 8^3 voxels)."""
    from atoken.modalities.mesh.data import MeshSettings, import_meshes
    from atoken.modalities.mesh.pybullet_sets import pybullet_paths, pybullet_root

    store = tmp_path / "meshes"
    sources = [*pybullet_paths("heldout"), str(Path(pybullet_root()) / "duck.obj")]
    settings = MeshSettings(views=4, eval_views=1, render_size=48, resolution=8)
    import_meshes(sources, store, settings=settings, progress=False)
    text = path.read_text().replace('path = "data/meshes"', f'path = "{store}"')
    assert str(store) in text
    (tmp_path / path.name).write_text(text)
    return tmp_path / path.name


def test_every_shipped_run_file_loads_and_builds_its_tasks(tmp_path):
    for path in [*sorted((ROOT / "configs").glob("*.toml"))]:
        if 'source = "meshes"' in path.read_text():
            path = _with_small_mesh_store(path, tmp_path)
        cfg = load_run_file(path)
        assert cfg.tasks, path
        if path.stem == "video":  # decoding the clips is slow; parsing is the check here
            continue
        if path.stem == "finetune_official":  # starts from a converted official folder:
            continue  # tests/official/test_finetune.py converts one and trains from it
        _, mixture = build_run(cfg)  # the first stage's tasks (the later ones: parsed)
        assert [t.label for t in mixture.tasks] == [s.key for s in cfg.plan()[0].tasks]


def test_the_papers_run_files_load_plan_and_follow_the_recipe():
    """configs/paper/: the So/C curriculum for 256 ranks and its one-GPU reduction load,
    round-trip and plan stage by stage (#29 item 2); the one-GPU file builds its first stage
    from the data atoken ships; the full one has the paper's numbers."""
    from atoken.engine.plan import plan_run
    from atoken.engine.runconfig import RunConfig, structure

    paper = {p.stem: p for p in sorted((ROOT / "configs" / "paper").glob("*.toml"))}
    assert set(paper) == {"so-c", "so-c-1gpu"}
    for path in paper.values():
        cfg = load_run_file(path)
        assert structure(RunConfig, json.loads(json.dumps(cfg.to_dict())), "again") == cfg
        plan = plan_run(cfg, nproc=256)
        assert [s.name for s in plan.stages] == ["image", "video", "3d", "fsq"]
        assert [t.name for s in cfg.plan() for t in s.transforms] == ["expand_latent", "to_fsq"]
        assert cfg.plan()[-1].transforms[0].params == {"levels": [4] * 6, "groups": 8}
        assert (cfg.optim.betas, cfg.optim.lr, cfg.optim.min_lr) == ((0.9, 0.95), 3e-4, 3e-5)
        assert (cfg.optim.weight_decay, cfg.optim.encoder_lr_mult) == (0.1, 0.1)
        for stage in cfg.plan():  # one micro-batch of every task a step, round robin
            assert cfg.stage_optim(stage).grad_accum == len(stage.tasks)
            kl = [t for t in stage.tasks for term in t.losses if term.name == "kl"]
            assert (stage.name == "fsq") == (not kl)  # a discrete latent exports no KL term
    full = load_run_file(paper["so-c"])
    assert [s.steps for s in full.plan()] == [200_000, 200_000, 50_000, 100_000]
    assert full.optim.warmup_steps == 2000 and full.train.ema_decay == 0.9999
    weights = {t.name: t.weight for t in full.plan()[0].tasks[0].losses}
    assert weights == {"l1": 0.2, "lpips": 2.0, "gram": 200.0, "clip": 0.2, "kl": 1e-8}
    distill = full.plan()[0].tasks[1].losses[0]
    assert (distill.name, distill.weight, distill.params["temperature"]) == ("distill", 1.0, 2.0)
    batches = {t.key: 256 * t.data["batch_size"] for s in full.plan() for t in s.tasks}
    assert batches["image_text"] == 8192  # the paper's global batches on 256 ranks
    assert 1024 <= batches["image_512"] <= 4096 and 512 <= batches["video_512"] <= 1024
    assert 256 <= batches["mesh"] <= 512
    _, mixture = build_run(load_run_file(paper["so-c-1gpu"]))
    assert [t.label for t in mixture.tasks] == ["image_512", "image_text"]
    understanding = [t for s in full.plan() for t in s.tasks if t.name == "text_alignment"]
    assert understanding and all(t.data.get("caption_key") == "txt" for t in understanding)


def test_a_run_config_with_tasks_round_trips_through_its_dict():
    from atoken.engine.runconfig import RunConfig, structure

    for path in sorted((ROOT / "configs").glob("*.toml")):
        cfg = load_run_file(path)
        assert structure(RunConfig, json.loads(json.dumps(cfg.to_dict())), "again") == cfg


def test_atoken_plugins_lists_tasks_and_data_sources():
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    components = json.loads(result.output)["components"]
    assert "image_reconstruction" in {c["name"] for c in components["tasks"]}
    assert "media_store" in {c["name"] for c in components["data_sources"]}
    assert "synthetic_depth" in {c["name"] for c in components["data_sources"]}  # the example


def test_video_previews_of_clips_named_like_paths_stay_in_the_task_folder(tmp_path):
    """A store's clip names become file names: ``../../x`` and ``a/b`` write one file each,
    inside the task's folder (#36 item 3)."""
    from types import SimpleNamespace

    import torch

    from atoken.modalities.video.task import VideoReconstructionTask

    names = ("../../escaped", "sub/clip.mp4")
    task = SimpleNamespace(
        source=SimpleNamespace(heldout_names=names), params=SimpleNamespace(fps=4.0)
    )
    clips = [torch.rand(3, 2, 16, 16) for _ in names]
    folder = tmp_path / "run" / "video"
    VideoReconstructionTask.save_previews(task, clips, clips, folder, 3)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 4 and all(p.parent == folder for p in written), written


def test_an_unknown_loss_or_metric_names_its_task(tmp_path):
    bad_loss = IMAGE.replace("previews = 1", 'previews = 1\nlosses = [{ name = "l2" }]')
    with pytest.raises(atoken.UnknownComponentError, match=r"loss in \[\[tasks\]\] image_rec"):
        build_run(load_run_file(_write(tmp_path, "badloss", bad_loss)))
    bad_metric = IMAGE.replace('metrics = ["psnr"]', 'metrics = ["psrn"]')
    with pytest.raises(atoken.UnknownComponentError, match=r"metric in .*'psrn'.*'psnr'"):
        build_run(load_run_file(_write(tmp_path, "badmetric", bad_metric)))


def test_a_random_trunk_lpips_is_logged_as_not_lpips(tmp_path):
    lpips = '{ name = "lpips", params = { random_backbone_for_tests = true } }'
    tasks = IMAGE.replace('metrics = ["psnr"]', f'metrics = ["psnr"]\nlosses = [{lpips}]')
    model, mixture = build_run(load_run_file(_write(tmp_path, "stand_in", tasks)))
    (task,) = mixture.tasks
    _, logs = task.loss(model, task.batch(0, 0))
    assert "lpips_random_trunk_NOT_LPIPS" in logs and "lpips" not in logs
