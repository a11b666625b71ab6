"""Gaussian renderer benchmark: the compiled ``cpu`` renderer vs the ``torch`` reference.

    .venv/bin/python benchmarks/render.py [--sizes 5000 20000 50000] [--res 128] [--views 4]

Scenes: N Gaussians on the surface of a sphere of radius 0.4 (a closed surface, as a decoded
asset), scale 0.5/64 (about a voxel of the 64^3 grid), opacity 0.8, random colours; V views
from ``sphere_cameras`` at ``--res`` pixels. For each N both renderers render the same scene
(forward, then forward + backward of an L1 loss against a random target), best of 3 after one
warm-up (the first ``cpu`` call compiles its kernels, or reads numba's cache). Printed side by
side with the ratio and the largest image difference between the two renderers.
"""

from __future__ import annotations

import argparse
import time

import torch

from atoken.modalities.mesh import CpuRenderer, GaussianSet, TorchRenderer
from atoken.modalities.mesh.cameras import sphere_cameras


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


def timed(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cam = sphere_cameras(args.views, args.res)
    target = torch.rand(args.views, 3, args.res, args.res)
    renderers = {"torch": TorchRenderer(), "cpu": CpuRenderer()}
    print(f"{args.views} views at {args.res} px; seconds, best of 3")
    print(f"{'N':>7} {'renderer':>8} {'forward':>9} {'fwd+bwd':>9}  max |diff|")
    for n in args.sizes:
        base = scene(n)
        rows, images = {}, {}
        for name, render in renderers.items():
            leaves = {k: getattr(base, k).clone().requires_grad_() for k in
                      ("means", "scales", "quats", "opacities", "sh0")}  # fmt: skip

            def forward(render=render, leaves=leaves):
                with torch.no_grad():
                    return render(GaussianSet(**leaves), cam)

            def step(render=render, leaves=leaves):
                out = render(GaussianSet(**leaves), cam)
                (out.rgb - target).abs().mean().backward()

            images[name] = forward().rgb
            rows[name] = (timed(forward), timed(step))
        diff = float((images["torch"] - images["cpu"]).abs().max())
        for name, (fwd, both) in rows.items():
            print(f"{n:>7} {name:>8} {fwd:>9.3f} {both:>9.3f}  {diff:.2e}")
        ratio = rows["torch"][1] / rows["cpu"][1]
        print(f"{n:>7} {'ratio':>8} {rows['torch'][0] / rows['cpu'][0]:>8.1f}x {ratio:>8.1f}x")


if __name__ == "__main__":
    main()
