"""Gaussian renderer benchmark: the compiled ``cpu`` renderer vs the ``torch`` reference.

    .venv/bin/python benchmarks/render.py [--sizes 5000 50000 200000] [--res 128 256 512]
        [--views 4] [--repeat 3] [--skip-torch-above 300000000]

Scenes: N Gaussians on the surface of a sphere of radius 0.4 (a closed surface, as a decoded
asset), scale 0.5/64 (about a voxel of the 64^3 grid), opacity 0.8, random colours; V views
from ``sphere_cameras`` at each resolution. For each (resolution, N) both renderers render the
same scene, each in a fresh process: forward, then forward + backward of an L1 loss against a
random target, best of ``--repeat`` after one warm-up (the first ``cpu`` call compiles its
kernels or reads numba's cache). Peak memory, in another fresh process, is the rise of the
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` after the warm-up) over
its size before one forward + backward, with glibc mapping every block of 64 KiB or more so
that freed memory leaves the resident set. Printed side by side with the ratios and the
largest image difference.

The reference keeps every pixel x Gaussian pair of a tile for autograd, so its memory grows
with pairs; ``--skip-torch-above`` leaves it out where the scene has more pairs than that
(counted from the tile lists before rendering) and says so.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch

from atoken.modalities.mesh import CpuRenderer, GaussianSet, TorchRenderer
from atoken.modalities.mesh.cameras import sphere_cameras
from atoken.modalities.mesh.splat import project

RENDERERS = {"torch": TorchRenderer, "cpu": CpuRenderer}
LEAVES = ("means", "scales", "quats", "opacities", "sh0")


def scene(n: int, seed: int = 0) -> GaussianSet:
    g = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1) * 0.4
    return GaussianSet(
        means=means,
        scales=torch.full((n, 3), 0.5 / 64),
        quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(),
        opacities=torch.full((n,), 0.8),
        sh0=torch.randn(n, 3, generator=g),
    )


def pairs(n: int, res: int, views: int, tile: int = 16) -> int:
    """Pixel x Gaussian pairs the reference evaluates: sum over tiles of pixels x list."""
    base, cam = scene(n), sphere_cameras(views, res)
    total = 0
    for v in range(views):
        s = project(base, cam, v)
        keep = s.radius > 0
        u, w, r = s.mean2d[keep, 0], s.mean2d[keep, 1], s.radius[keep]
        x0, x1 = ((u - r) / tile).floor().clamp(0), ((u + r) / tile).floor().clamp(max=res // tile)
        y0, y1 = ((w - r) / tile).floor().clamp(0), ((w + r) / tile).floor().clamp(max=res // tile)
        total += int(((x1 - x0 + 1).clamp(0) * (y1 - y0 + 1).clamp(0)).sum()) * tile * tile
    return total


def _memory(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) * 1024


def _timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, n: int, res: int, views: int, repeat: int) -> dict:
    """In a fresh process: forward and fwd+bwd seconds and the image of one renderer; with
    ``repeat = 0``, the peak bytes of one forward + backward instead."""
    torch.set_num_threads(2)
    render, cam = RENDERERS[name](), sphere_cameras(views, res)
    target = torch.rand(views, 3, res, res, generator=torch.Generator().manual_seed(1))
    leaves = {k: getattr(scene(n), k).clone().requires_grad_() for k in LEAVES}

    def forward():
        with torch.no_grad():
            return render(GaussianSet(**leaves), cam)

    def step():
        out = render(GaussianSet(**leaves), cam)
        (out.rgb - target).abs().mean().backward()

    image = forward().rgb  # the warm-up (compiles the cpu kernels)
    step()
    if repeat == 0:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset the peak resident set to the current one
        before = _memory("VmRSS")
        step()
        return {"peak": _memory("VmHWM") - before}
    return {
        "forward": _timed(forward, repeat),
        "both": _timed(step, repeat),
        "image": image.numpy(),
    }  # fmt: skip (numpy: pickled by value to the parent)


def _child(spawn, *args, malloc_mmap: bool = False) -> dict:
    """``measure(*args)`` in a fresh process; with ``malloc_mmap`` glibc maps every block of
    64 KiB or more and unmaps it when freed, so the resident set follows live memory (this
    slows allocation, so times are measured without it)."""
    if malloc_mmap:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    try:
        with spawn.Pool(1, maxtasksperchild=1) as pool:
            return pool.apply(measure, args)
    finally:
        os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000, 200000])
    parser.add_argument("--res", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-torch-above", type=int, default=300_000_000)
    args = parser.parse_args()
    spawn = mp.get_context("spawn")
    print(f"{args.views} views; seconds (best of {args.repeat}); peak MiB over the start")
    print(f"{'px':>4} {'N':>7} {'pairs':>6} {'renderer':>8} {'forward':>9} {'fwd+bwd':>9}"
          f" {'peak MiB':>9}  max |diff|")  # fmt: skip
    for res in args.res:
        for n in args.sizes:
            count = pairs(n, res, args.views)
            rows = {}
            for name in RENDERERS:
                if name == "torch" and count > args.skip_torch_above:
                    need = count * 45 / 2**30  # the reference keeps about 45 bytes a pair
                    print(f"{res:>4} {n:>7} {count / 1e6:>5.0f}M {name:>8}  skipped: more"
                          f" pairs than --skip-torch-above (about {need:.0f} GiB)")  # fmt: skip
                    continue
                case = (name, n, res, args.views)
                rows[name] = _child(spawn, *case, args.repeat)
                rows[name].update(_child(spawn, *case, 0, malloc_mmap=True))
            diff = (
                float(abs(rows["torch"]["image"] - rows["cpu"]["image"]).max())
                if len(rows) == 2
                else float("nan")
            )
            for name, r in rows.items():
                print(f"{res:>4} {n:>7} {count / 1e6:>5.0f}M {name:>8} {r['forward']:>9.3f}"
                      f" {r['both']:>9.3f} {r['peak'] / 2**20:>9.0f}  {diff:.2e}")  # fmt: skip
            if len(rows) == 2:
                t, c = rows["torch"], rows["cpu"]
                print(f"{res:>4} {n:>7} {count / 1e6:>5.0f}M {'ratio':>8}"
                      f" {t['forward'] / c['forward']:>8.1f}x {t['both'] / c['both']:>8.1f}x"
                      f" {t['peak'] / max(c['peak'], 1):>8.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
