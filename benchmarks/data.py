"""Data benchmark: the zarr reader against what training consumes, on this machine.

    .venv/bin/python benchmarks/data.py              # prints both rates, writes data.json

Both figures are measured in this one run, one after the other:

(reader)  samples/s of :class:`atoken.data.ZarrDataset` through a torch ``DataLoader`` with
          2 worker processes and random crops of 64..256 px (the training default), checksums
          verified, from a store imported from the bundled training photos
          (``PhotoSet(TRAIN_PHOTOS)``), listed 25 times per epoch to stand in for a dataset of
          400 photos. The loader's start-up (forking the workers, opening the store in each)
          is included: every epoch starts a fresh iterator.
(trainer) steps/s of ``Trainer.train_step`` for the ``tiny`` preset on ``configs/demo.toml``
          (its ``image_reconstruction`` task: batch 8, crops 64..128; fp32: this CPU emulates
          bf16), reading its crops from the same store (a ``media_store`` source; its last
          photo is held out), timed over a fixed number of steps after warm-up steps.

The ratio is reader samples/s over the samples/s the trainer consumes (steps/s x batch size);
the goal is at least 3. On a shared machine a step's time swings with the other jobs (torch's
threads stall when a core is taken), so the ratio is also given against the trainer's fastest
step, the demanding case for the reader; the verdict uses that one.
"""

from __future__ import annotations

import argparse
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
ROOT = HERE.parent
GOAL_RATIO = 3.0


def import_photos(url: str) -> dict[str, Any]:
    """Write the bundled training photos to a media store; returns sizes and time."""
    from atoken.data import TRAIN_PHOTOS, MediaWriter, PhotoSet

    start = time.perf_counter()
    photos = PhotoSet(TRAIN_PHOTOS)
    with MediaWriter(url) as writer:
        for name, image in zip(photos.names, photos, strict=True):
            writer.add(name, image.permute(1, 2, 0).contiguous().numpy())  # [H, W, 3]
    return {
        "samples": len(photos),
        "pixels": int(sum(x.shape[1] * x.shape[2] for x in photos)),
        "seconds": time.perf_counter() - start,
    }


def reader_rate(url: str, *, samples: int, workers: int, batch_size: int) -> dict[str, Any]:
    """Samples/s of ZarrDataset + DataLoader over enough epochs to read ``samples``."""
    from torch.utils.data import DataLoader

    from atoken.data import ZarrDataset, collate_list

    n = len(ZarrDataset(url, crop=None))
    # the 16 photos listed 25 times stand in for a dataset of 400 (each read its own crop), so
    # the loader's start-up is spread over an epoch of realistic length
    dataset = ZarrDataset(url, crop=(64, 256), seed=0, indices=np.tile(np.arange(n), 25))
    read, pixels, epoch = 0, 0, 0
    start = time.perf_counter()
    while read < samples:
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_list
        )
        for batch in loader:
            read += len(batch)
            pixels += sum(x.shape[1] * x.shape[2] for x in batch)
        epoch += 1
    seconds = time.perf_counter() - start
    return {
        "samples": read,
        "epochs": epoch,
        "seconds": seconds,
        "samples_per_s": read / seconds,
        "mean_crop_pixels": pixels / read,
        "workers": workers,
    }


def trainer_rate(url: str, *, steps: int, warmup: int, out_dir: Path) -> dict[str, Any]:
    """Steps/s of the tiny preset's train_step reading crops from the store."""
    from atoken.engine.runconfig import load_run_file
    from atoken.engine.trainer import Trainer
    from atoken.plugins.manager import get_plugin_manager
    from atoken.train import build_run

    cfg = load_run_file(
        ROOT / "configs" / "demo.toml",
        run={"out_dir": str(out_dir)},
        # no PCA start: only the step time is measured (and it saves reading 40 batches)
        model={"pca_init": False},
        train={"precision": "fp32", "steps": warmup + steps, "progress": False},
        tasks=[{"data": {"source": "media_store", "url": url, "heldout": []}, "metrics": ["psnr"]}],
    )
    torch.manual_seed(cfg.run.seed)
    _, mixture = build_run(cfg)
    trainer = Trainer(cfg, mixture, hooks=get_plugin_manager().hook)
    for _ in range(warmup):
        trainer.train_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    seconds = sum(times)
    batch = mixture.tasks[0].source.batch_size
    return {
        "preset": cfg.model.preset,
        "batch_size": batch,
        "precision": cfg.train.precision,
        "steps": steps,
        "warmup_steps": warmup,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "samples_per_s": steps * batch / seconds,
        "best_step_seconds": min(times),
        "best_samples_per_s": batch / min(times),
        "step_seconds": times,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=HERE / "data.json")
    parser.add_argument("--reader-samples", type=int, default=1600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "photos.zarr")
        imported = import_photos(url)
        print(
            f"store: {imported['samples']} photos, {imported['pixels'] / 1e6:.1f} Mpixel, "
            f"imported in {imported['seconds']:.1f} s"
        )
        reader = reader_rate(url, samples=args.reader_samples, workers=args.workers, batch_size=8)
        print(
            f"reader : {reader['samples_per_s']:8.1f} samples/s  (ZarrDataset, DataLoader with "
            f"{reader['workers']} workers, crops 64-256 px, mean {reader['mean_crop_pixels']:.0f}"
            f" px, {reader['samples']} samples)"
        )
        trainer = trainer_rate(url, steps=args.steps, warmup=args.warmup, out_dir=Path(tmp) / "run")
        print(
            f"trainer: {trainer['steps_per_s']:8.3f} steps/s = {trainer['samples_per_s']:.1f} "
            f"samples/s  (tiny preset, batch {trainer['batch_size']}, fp32, "
            f"{trainer['steps']} steps after {trainer['warmup_steps']} warm-up; fastest step "
            f"{trainer['best_step_seconds']:.2f} s = {trainer['best_samples_per_s']:.1f} samples/s)"
        )
    load = (load_before, os.getloadavg()[0])
    print(f"load   : {load[0]:.1f} -> {load[1]:.1f} (1-minute load average of this shared machine)")
    ratio = reader["samples_per_s"] / trainer["samples_per_s"]
    ratio_best = reader["samples_per_s"] / trainer["best_samples_per_s"]
    verdict = "OK" if ratio_best >= GOAL_RATIO else "BELOW GOAL"
    goal = f"goal >= {GOAL_RATIO:.0f}x"
    print(
        f"ratio  : {ratio:8.1f}x  reader over trainer consumption; {ratio_best:.1f}x against "
        f"the trainer's fastest step ({goal}) {verdict}"
    )
    results = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1min": load,
        },
        "torch": torch.__version__,
        "store": imported,
        "reader": reader,
        "trainer": trainer,
        "ratio": ratio,
        "ratio_vs_fastest_step": ratio_best,
        "goal_ratio": GOAL_RATIO,
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
