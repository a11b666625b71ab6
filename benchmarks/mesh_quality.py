"""3D benchmark: a trained tokenizer's Gaussians vs the no-learning baseline on held-out objects.

    .venv/bin/atoken data import meshes --pybullet all --render-size 128 --resolution 24 data/meshes
    .venv/bin/atoken train configs/mesh.toml
    .venv/bin/python benchmarks/mesh_quality.py [--tokenizer runs/mesh/tokenizer]
        [--store data/meshes] [--pictures docs/images]

For each held-out object of the store (pybullet's held-out set: objects never trained on),
both are rendered by the same renderer from the store's evaluation views (an orbit at 30
degrees that no object's features or training ever used) and scored against the mesh's own
renders: PSNR and SSIM (and LPIPS when its weights are on the machine) per object, then the
mean over objects. The baseline is one isotropic
Gaussian per active voxel with the mean colour of its patch (``baseline_gaussians``), the same
pipeline with no learning. ``--pictures`` writes the figures of docs/3d.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import atoken
from atoken.modalities.mesh import baseline_gaussians
from atoken.modalities.mesh.cameras import orbit_cameras
from atoken.modalities.mesh.data import MeshStore
from atoken.modalities.mesh.pybullet_sets import HELDOUT


def score(metrics: dict, recons: list[torch.Tensor], views: list[torch.Tensor]) -> dict:
    out = {}
    for metric in metrics.values():
        metric.reset()
        metric.update(recons, views)
        out.update(metric.compute())
    return out


def pictures(folder: Path, name: str, record, ours, base, renderer) -> None:
    from atoken.data.video_io import write_gif
    from atoken.viz import save_side_by_side

    folder.mkdir(parents=True, exist_ok=True)
    views = record.eval_views
    o = renderer(ours, views.camera).rgb.clamp(0, 1)
    b = renderer(base, views.camera).rgb.clamp(0, 1)
    save_side_by_side(
        list(views.rgb), list(o), folder / "3d_heldout.png",
        labels=[name] * views.count, columns=("mesh render", "ours", "baseline"), extra=[list(b)],
    )  # fmt: skip
    dots = baseline_gaussians(record.voxels, sigma=0.25, opacity=1.0)  # the voxel grid
    v = renderer(dots, views.camera).rgb.clamp(0, 1)
    save_side_by_side(
        list(views.rgb[:2]), list(v[:2]), folder / "3d_voxels.png",
        labels=[name] * 2, columns=("mesh render", f"{len(record.voxels)} voxels"),
    )  # fmt: skip
    feature = record.views
    save_side_by_side(
        list(feature.rgb[:4]), [d.expand(3, -1, -1) / max(float(d.max()), 1e-6)
                               for d in feature.depth[:4]],
        folder / "3d_views.png", columns=("colour", "depth"),
    )  # fmt: skip
    size = int(views.camera.height[0])
    orbit = orbit_cameras(36, size, elevation_degrees=20.0)
    with torch.no_grad():
        turn_ours = renderer(ours, orbit).rgb.clamp(0, 1)  # [T, 3, H, W]
        turn_base = renderer(base, orbit).rgb.clamp(0, 1)
    both = torch.cat([turn_base, torch.ones_like(turn_ours[..., :4]), turn_ours], dim=3)
    write_gif(both.permute(1, 0, 2, 3), folder / "3d_turntable.gif", fps=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="runs/mesh/tokenizer")
    parser.add_argument("--store", default="data/meshes")
    parser.add_argument("--renderer", default="cpu")
    parser.add_argument("--pictures", default="")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tok = atoken.Tokenizer.from_pretrained(args.tokenizer).eval()
    store = MeshStore(args.store)
    registry = atoken.get_registry()
    renderer = registry.renderers.create(args.renderer)
    metrics = {n: registry.metrics.create(n) for n in ("psnr", "ssim")}
    try:  # LPIPS where its backbone's weights are on this machine (nothing is downloaded)
        metrics["lpips"] = registry.metrics.create("lpips")
    except atoken.WeightsNotFoundError as exc:
        print(f"LPIPS not reported: {str(exc).splitlines()[0][:120]}")
    names = [n for n in HELDOUT if n in store.names]
    print(f"held-out objects of {args.store}: {len(names)}; {store.settings.eval_views} "
          f"unseen views each at {store.settings.render_size} px, {store.settings.resolution}^3 "
          "voxels")  # fmt: skip
    print(f"{'object':<40} {'voxels':>6} {'PSNR ours':>9} {'base':>6} {'SSIM ours':>9} {'base':>6}")
    rows = []
    for name in names:
        record = store.record(name)
        views = record.eval_views
        with torch.no_grad():
            (ours,) = tok.reconstruct([record.voxels], "mesh")
            base = baseline_gaussians(record.voxels)
            o = list(renderer(ours, views.camera).rgb.clamp(0, 1))
            b = list(renderer(base, views.camera).rgb.clamp(0, 1))
        s_o, s_b = score(metrics, o, list(views.rgb)), score(metrics, b, list(views.rgb))
        rows.append((s_o["psnr"], s_b["psnr"], s_o["ssim"], s_b["ssim"]))
        print(f"{name:<40} {len(record.voxels):>6} {s_o['psnr']:>9.2f} {s_b['psnr']:>6.2f} "
              f"{s_o['ssim']:>9.3f} {s_b['ssim']:>6.3f}")  # fmt: skip
        if "lpips" in s_o:
            print(f"{'':<40} LPIPS ours {s_o['lpips']:.3f}, baseline {s_b['lpips']:.3f}")
        if args.pictures and name == names[0]:
            pictures(Path(args.pictures), name, record, ours, base, renderer)
    mean = [sum(r[i] for r in rows) / len(rows) for i in range(4)]
    print(f"{'mean':<40} {'':>6} {mean[0]:>9.2f} {mean[1]:>6.2f} {mean[2]:>9.3f} {mean[3]:>6.3f}")
    print(f"ours - baseline: {mean[0] - mean[1]:+.2f} dB PSNR, {mean[2] - mean[3]:+.3f} SSIM")


if __name__ == "__main__":
    main()
