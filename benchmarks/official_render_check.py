"""The official renderer against atoken's, on one machine with both (#34 item 3).

    python benchmarks/official_render_check.py             # CUDA + mip-splatting's rasterizer
    python benchmarks/official_render_check.py --size 64    # a quick look (any machine)

Two scenes: the official Gaussian decoder's Gaussians (its released activations, 32 per voxel;
random weights at width 64 in the official checkpoint layout) for 12 voxels near the grid's
centre, and 60 larger overlapping Gaussians. Each is rendered from ``--views`` cameras at the
official renderer's settings (512 px, near 0.8, far 1.6, black background, 2D filter 0.1) by
atoken's ``cpu`` renderer (``atoken.official.gaussian_render.official_render``) and, where a
CUDA device and mip-splatting's ``diff_gaussian_rasterization`` (TRELLIS' renderer's backend,
installed by the official ``install_gs.sh``) are present, by the official rasterizer: one line
per scene with the PSNR between the two renders (docs/official-weights.md asks > 40 dB), or
why the official rasterizer cannot run. Exit status 1 when a PSNR is at most 40 dB.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from atoken.modalities.mesh import GaussianSet
from atoken.official import load_gaussian_decoder
from atoken.official.gaussian_render import (
    OFFICIAL_RENDER_SIZE,
    official_cameras,
    official_rasterizer_render,
    official_render,
    official_renderer_missing,
    psnr,
)
from atoken.testing.official import official_gaussian_decoder_state_dict

THRESHOLD_DB = 40.0


def decoder_scene() -> GaussianSet:
    """The official decoder's Gaussians for 12 voxels near the centre of the 64^3 grid."""
    dec = load_gaussian_decoder(
        official_gaussian_decoder_state_dict(width=64, depth=2, mlp=96, seed=7), {"num_heads": 2}
    )
    g = torch.Generator().manual_seed(8)
    coords = torch.zeros(12, 4, dtype=torch.int32)
    coords[:, 1:] = torch.randint(26, 38, (12, 3), generator=g)  # (sample 0, x, y, z)
    with torch.no_grad():
        return dec.decode(torch.rand(12, 768, generator=g) * 2 - 1, coords)[0]


def blob_scene() -> GaussianSet:
    """60 Gaussians of 0.005-0.05 scales, any rotation, some colours below 0."""
    g = torch.Generator().manual_seed(9)
    n = 60
    log_scale = torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.05), generator=g)
    return GaussianSet(
        means=(torch.rand(n, 3, generator=g) - 0.5) * 0.6,
        scales=log_scale.exp(),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        opacities=torch.empty(n).uniform_(0.2, 0.95, generator=g),
        sh0=torch.randn(n, 3, generator=g) * 1.5,
    )


def main(argv: list[str] | None = None) -> int:
    """Print one line per scene; 1 when a PSNR is at most 40 dB, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=OFFICIAL_RENDER_SIZE)
    args = parser.parse_args(argv)
    cameras = official_cameras(args.views, size=args.size)
    missing = official_renderer_missing()
    print(f"official rasterizer: {'available' if missing is None else missing}")
    status = 0
    for name, build in (("decoder", decoder_scene), ("blobs", blob_scene)):
        gaussians = build()
        start = time.perf_counter()
        with torch.no_grad():
            ours = official_render(gaussians, cameras).rgb  # [V, 3, H, W]
        took = time.perf_counter() - start
        line = (
            f"[{name}] {len(gaussians)} Gaussians, {args.views} views of {args.size} px: "
            f"atoken cpu {took:.2f} s"
        )
        if missing is not None:
            print(f"{line}; official rasterizer skipped")
            continue
        theirs = official_rasterizer_render(gaussians, cameras).rgb
        db = psnr(ours, theirs)
        status |= int(not db > THRESHOLD_DB)
        print(f"{line}; PSNR atoken vs official {db:.2f} dB")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
