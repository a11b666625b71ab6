"""Data pipeline benchmark: JPEG shards through data workers, and the training step's wait.

    .venv/bin/python benchmarks/data_pipeline.py     # prints both tables, writes data_pipeline.json

Both are measured in this one run, one after the other:

(delivery) samples/s the ``webdataset`` source delivers through the trainer's prefetcher
           (:class:`atoken.engine.prefetch.Prefetcher`) with 0, 1 and 2 data workers: JPEG
           shards of 640 x 480 photos (crops of the bundled photos, quality 90), each decoded
           with the shorter side resized to 256 px (``resize = 256``, JPEG draft mode) and a
           256 px crop taken, as a 256-pixel training run reads them. Printed with worker
           start-up included (the prefetcher starts them at the first batch) and after the
           first batch (the steady rate of a long run). Goal: 2 workers >= 1.7x the rate of
           1 on 2 cores.
(waiting)  the fraction of ``Trainer.train_step`` time spent waiting for the batch on the
           ``small`` preset (fp32, batch 4 of those 256 px crops), with 0 and 2 data workers,
           over a few steps after one warm-up step. Goal: < 5% with workers.

The machine is shared: rates swing with other jobs, so read the ratios, not the absolutes.
Nothing here is asserted in tests (no wall times in tests).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SIDE = 256


def write_jpeg_shards(root: Path, samples: int, per_shard: int = 64) -> str:
    """``samples`` 640 x 480 JPEGs cut from the bundled photos, in shards; the brace URL."""
    import webdataset as wds
    from PIL import Image

    from atoken.data.images import TRAIN_PHOTOS, load_photo

    photos = [load_photo(n).permute(1, 2, 0).numpy() for n in TRAIN_PHOTOS]
    rng = np.random.default_rng(0)
    with wds.ShardWriter(str(root / "bench-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(samples):
            photo = Image.fromarray(photos[i % len(photos)])
            scale = max(640 / photo.width, 480 / photo.height)
            if scale > 1:
                size = (round(photo.width * scale) + 1, round(photo.height * scale) + 1)
                photo = photo.resize(size)
            left = int(rng.integers(0, photo.width - 640 + 1))
            top = int(rng.integers(0, photo.height - 480 + 1))
            buf = io.BytesIO()
            photo.crop((left, top, left + 640, top + 480)).save(buf, "JPEG", quality=90)
            sink.write({"__key__": f"img{i:06d}", "jpg": buf.getvalue()})
    last = (samples - 1) // per_shard
    return str(root / f"bench-{{000000..{last:06d}}}.tar")


def _source(urls: str, batch_size: int) -> Any:
    from atoken.data.webdataset_source import WebDatasetSource

    return WebDatasetSource(
        urls=urls, batch_size=batch_size, resize=SIDE, crop_min=SIDE, crop_max=SIDE
    )


def delivery(urls: str, *, workers: int, batches: int, batch_size: int) -> dict[str, Any]:
    """Samples/s of the source through the prefetcher with ``workers`` processes."""
    from atoken.engine.prefetch import Prefetcher

    source = _source(urls, batch_size)
    prefetch = Prefetcher(
        source, workers=workers, grad_accum=1, end_step=batches, seed_of=lambda s, m: s
    )
    start = time.perf_counter()
    first = len(prefetch.get(0, 0))  # the workers start with the first batch
    started = time.perf_counter()
    n = first + sum(len(prefetch.get(step, 0)) for step in range(1, batches))
    end = time.perf_counter()
    prefetch.close()
    return {
        "workers": workers,
        "samples": n,
        "seconds": end - start,
        "samples_per_s": n / (end - start),  # start-up included
        "steady_per_s": (n - first) / (end - started),  # after the first batch
    }


def waiting(urls: str, *, workers: int, steps: int, out: Path) -> dict[str, Any]:
    """The share of ``train_step`` time spent in the prefetcher's ``get`` on ``small``."""
    from atoken.engine.runconfig import RunConfig, structure
    from atoken.engine.trainer import Trainer
    from atoken.train import build_run

    data = {"source": "webdataset", "urls": urls, "batch_size": 4, "resize": SIDE}
    data.update(crop_min=SIDE, crop_max=SIDE)
    cfg = structure(
        RunConfig,
        {
            "run": {"name": "bench", "out_dir": str(out), "seed": 0},
            "model": {"preset": "small"},
            "train": {
                "steps": steps + 1,
                "precision": "fp32",
                "ema_decay": 0.0,
                "progress": False,
                "data_workers": workers,
            },
            "tasks": [
                {
                    "name": "image_reconstruction",
                    "data": data,
                    "losses": [{"name": "l1"}, {"name": "kl", "weight": 1e-8}],
                    "metrics": [],
                    "previews": 0,
                }
            ],
        },
        "bench",
    )
    _, mixture = build_run(cfg)
    trainer = Trainer(cfg, mixture)
    get, waited = trainer.batches.get, [0.0]

    def timed(step: int, micro: int) -> Any:
        start = time.perf_counter()
        batch = get(step, micro)
        waited[0] += time.perf_counter() - start
        return batch

    trainer.batches.get = timed
    trainer.train_step()  # warm-up (the workers start here)
    waited[0] = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    total = time.perf_counter() - start
    trainer.batches.close()
    return {
        "workers": workers,
        "steps": steps,
        "step_s": total / steps,
        "wait_s": waited[0] / steps,
        "wait_fraction": waited[0] / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=384, help="JPEGs in the shards")
    parser.add_argument("--batch-size", type=int, default=16, help="delivery batch")
    parser.add_argument("--steps", type=int, default=4, help="timed small-preset steps")
    parser.add_argument("--out", type=Path, default=HERE / "data_pipeline.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        urls = write_jpeg_shards(root, args.samples)
        batches = args.samples // args.batch_size
        rates = [
            delivery(urls, workers=w, batches=batches, batch_size=args.batch_size)
            for w in (0, 1, 2)
        ]
        waits = [waiting(urls, workers=w, steps=args.steps, out=root / f"run{w}") for w in (0, 2)]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"\ndelivery: {args.samples} JPEGs of 640x480 -> resize {SIDE} -> {SIDE} px crop")
    print("| data workers | samples/s | vs 1 worker | after the first batch | vs 1 worker |")
    print("|---:|---:|---:|---:|---:|")
    one, steady = rates[1]["samples_per_s"], rates[1]["steady_per_s"]
    for r in rates:
        print(
            f"| {r['workers']} | {r['samples_per_s']:.1f} | {r['samples_per_s'] / one:.2f}x | "
            f"{r['steady_per_s']:.1f} | {r['steady_per_s'] / steady:.2f}x |"
        )
    print(f"\nwaiting: small preset, fp32, batch 4 of {SIDE} px crops, {args.steps} steps")
    print("| data workers | step (s) | waiting for data (s) | share of the step |")
    print("|---:|---:|---:|---:|")
    for w in waits:
        print(
            f"| {w['workers']} | {w['step_s']:.3f} | {w['wait_s']:.4f} | "
            f"{100 * w['wait_fraction']:.1f}% |"
        )
    ratio, ratio_steady = rates[2]["samples_per_s"] / one, rates[2]["steady_per_s"] / steady
    print(
        f"\n2 workers / 1 worker: {ratio:.2f}x with start-up, {ratio_steady:.2f}x after the first "
        f"batch (goal >= 1.7x); waiting with 2 workers: "
        f"{100 * waits[1]['wait_fraction']:.1f}% (goal < 5%)"
    )
    args.out.write_text(json.dumps({"delivery": rates, "waiting": waits}, indent=2))


if __name__ == "__main__":
    main()
