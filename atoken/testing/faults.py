"""Fault trials: concurrent imports, and imports or training runs killed at random moments.

Each trial runs the real ``atoken`` CLI in child processes and counts what a user would
check afterwards: every sample an exit-0 command reported is in the store, every stored
sample matches its checksum, and a killed-then-resumed run ends bit-identical to one that
never stopped. ``benchmarks/faults.py`` repeats them and prints the counts; the test suite
runs a few.

Usage::

    from atoken.testing.faults import concurrent_imports
    trial = concurrent_imports(tmp_path, images_per_import=20, wait=30.0)
    assert trial.lost == 0 and trial.checksum_failures == 0
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np

__all__ = [
    "Trial",
    "concurrent_imports",
    "killed_import",
    "killed_training",
    "make_images",
    "run_cli",
]

_CLI = "import sys; from atoken.cli import main; sys.exit(main())"


@attrs.frozen
class Trial:
    """What one trial did and found: ``expected``/``found`` samples (steps, for training),
    ``lost`` the samples an exit-0 command reported that the store does not hold (steps
    missing), ``refused`` commands the store's lock turned away, ``mismatched`` runs whose
    final weights differ from the uninterrupted reference."""

    runs: int
    kills: int
    expected: int
    found: int
    lost: int
    checksum_failures: int
    refused: int = 0
    mismatched: int = 0

    def __add__(self, other: Trial) -> Trial:
        return Trial(
            *(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True))
        )


def make_images(folder: Path, n: int, *, prefix: str = "img", seed: int = 0) -> list[str]:
    """``n`` small random PNGs of varied sizes in ``folder``; their names."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"{prefix}{i:04d}.png"
        image = rng.integers(0, 256, (8 + i % 9, 6 + i % 5, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / name)
        names.append(name)
    return names


def run_cli(*args: str) -> subprocess.Popen:
    """``atoken ARGS...`` in a child process (output captured)."""
    return subprocess.Popen(
        [sys.executable, "-c", _CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _audit(store: Path, wanted: set[str]) -> tuple[int, int, int]:
    """``(found, lost, checksum failures)`` of the samples ``wanted`` in ``store``."""
    from atoken.data import MediaStore, verify_store

    if not (store / "zarr.json").exists():
        return 0, len(wanted), 0
    names = set(MediaStore(store).names)
    report = verify_store(store, skip_bad=True, progress=False)
    return len(names), len(wanted - names), len(report.bad)


def concurrent_imports(
    work: Path, *, images_per_import: int = 20, wait: float = 0.0, seed: int = 0
) -> Trial:
    """Two ``atoken data import images`` of different folders into one store, started
    together. A command that exits non-zero must have been refused by the lock."""
    store = work / "store.zarr"
    folders = {}
    for k in range(2):
        names = make_images(work / f"src{k}", images_per_import, prefix=f"p{k}_", seed=seed + k)
        folders[work / f"src{k}"] = names
    args = ["--no-progress", "--wait", str(wait), "--shard-chunks", "2", "--chunk-kib", "1"]
    children = [run_cli("data", "import", "images", str(src), str(store), *args) for src in folders]
    outputs = [child.communicate(timeout=600)[0] for child in children]
    wanted: set[str] = set()
    refused = 0
    for (src, names), child, output in zip(folders.items(), children, outputs, strict=True):
        if child.returncode == 0:
            wanted |= set(names)
        elif "StoreLockedError" in output:
            refused += 1
        else:
            raise RuntimeError(f"import of {src} failed unexpectedly:\n{output}")
    found, lost, bad = _audit(store, wanted)
    return Trial(2, 0, len(wanted), found, lost, bad, refused=refused)


def _committed(store: Path) -> int:
    try:
        info = json.loads((store / "zarr.json").read_text())["attributes"]["atoken"]
        return int(info["committed"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0


def killed_import(work: Path, *, images: int = 200, seed: int = 0) -> Trial:
    """An import killed (SIGKILL) at a random moment after its first commit, then run again
    to completion."""
    src, store = work / "src", work / "store.zarr"
    names = make_images(src, images, seed=seed)
    args = ["data", "import", "images", str(src), str(store), "--no-progress"]
    args += ["--shard-chunks", "2", "--chunk-kib", "1", "--workers", "1"]
    child = run_cli(*args)
    deadline = time.monotonic() + 120
    while child.poll() is None and _committed(store) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 0.3))  # somewhere inside the import
    killed = child.poll() is None
    if killed:
        child.kill()
    child.communicate()
    again = run_cli(*args)
    output = again.communicate(timeout=600)[0]
    if again.returncode != 0:
        raise RuntimeError(f"the resumed import failed:\n{output}")
    found, lost, bad = _audit(store, set(names))
    return Trial(2, int(killed), len(names), found, lost, bad)


def _run_file(folder: Path, steps: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "run.toml"
    run.write_text(
        f'[run]\nout_dir = "{folder / "out"}"\nseed = 0\n[model]\npreset = "tiny"\n'
        "overrides = { depth = 1, decoder_depth = 1 }\n"
        f'[train]\nsteps = {steps}\nprecision = "fp32"\nprogress = false\n'
        "checkpoint_every = 2\nkeep_checkpoints = 2\nlog_every = 1\n"
        '[[tasks]]\nname = "image_reconstruction"\n'
        'data = { source = "photos", batch_size = 1, crop_min = 32, crop_max = 32 }\n'
        'metrics = ["psnr"]\n'
    )
    return run


def _final_state(folder: Path) -> tuple[int, dict]:
    from atoken.engine.checkpoint import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(folder / "out" / "checkpoints")
    if path is None:
        raise RuntimeError(f"no checkpoint in {folder / 'out'}")
    state = load_checkpoint(path)
    return int(state["step"]), state["model"]


def killed_training(work: Path, *, steps: int = 12, kills: int = 2, seed: int = 0) -> Trial:
    """``atoken train`` killed ``kills`` times at random moments and resumed each time, vs
    the same run uninterrupted: the final weights must be bit-identical."""
    import torch

    rng = random.Random(seed)
    reference = _run_file(work / "reference", steps)
    child = run_cli("train", str(reference))
    if child.wait(timeout=900) != 0:
        raise RuntimeError(f"the reference run failed:\n{child.communicate()[0]}")
    killed_run = _run_file(work / "killed", steps)
    done_kills, runs, resume = 0, 1, []
    while True:
        child = run_cli("train", str(killed_run), *resume)
        runs += 1
        if done_kills < kills:
            log = work / "killed" / "out" / "metrics.jsonl"
            seen = log.stat().st_size if log.exists() else 0
            deadline = time.monotonic() + 300
            while child.poll() is None and time.monotonic() < deadline:
                if log.exists() and log.stat().st_size > seen:  # training has started
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
            if child.poll() is None:
                child.kill()
                child.communicate()
                done_kills += 1
                resume = ["--resume"]
                continue
        output = child.communicate(timeout=900)[0]
        if child.returncode != 0:
            raise RuntimeError(f"the resumed run failed:\n{output}")
        break
    (_, want), (step, got) = _final_state(work / "reference"), _final_state(work / "killed")
    same = want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    return Trial(runs, done_kills, steps, step, steps - step, 0, mismatched=int(not same))
