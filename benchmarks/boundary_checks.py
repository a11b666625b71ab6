"""Boundary-check benchmark: what checking the modalities' output costs a training step.

    .venv/bin/python benchmarks/boundary_checks.py   # prints the ratio, writes a JSON

Both sides are measured in this one run, side by side: pairs of steps back to back (on, off;
then off, on; ...), so a busy machine slows both alike. The ratio is the median of the pairs'
ratios (their quartiles show the machine's noise), and also the best time of each side:

(step)   one training step of the ``small`` preset (forward and backward, fp32, CPU): raw
         images -> ``model.prepare`` (patchify, pack, normalise) -> ``model(batch)`` (encoder,
         bottleneck, decoder, heads) -> an MSE loss against the images -> ``backward``, with
         the checks of :mod:`atoken.core.boundary` on (the default) and off
         (``model.boundary = attrs.evolve(model.boundary, enabled=False)``, which also skips
         the latent's own validation: off checks nothing). The batch is 4 images of 64 to
         256 px (the training crops' range), 560 tokens; one torch thread by default, as a
         thread of a multi-threaded step stalls the whole step when another job takes its
         core (``--threads`` to change it).
(pack)   the checked pack alone against the unchecked one on the same images, so the checks'
         cost is also seen apart from the step's noise; as a share of the fastest step.

The goal: the checks cost at most 2% of the step (median ratio on/off <= 1.02, and the
checked pack at most 2% of the step more than the unchecked one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import attrs
import torch

import atoken
from atoken.core.boundary import BoundaryChecks

HERE = Path(__file__).resolve().parent
GOAL = 1.02
SIDES = [64, 128, 192, 256]  # 4 images (s x s + 32 px), the training crops' range


def _images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, s, s + 32, generator=g) for s in SIDES]


def _step(model: Any, images: list[torch.Tensor]) -> float:
    """One forward + backward; seconds."""
    start = time.perf_counter()
    batch = model.prepare(images, "image")
    out = model(batch)
    loss = torch.stack(
        [(y - x).square().mean() for y, x in zip(out.samples, images, strict=True)]
    ).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def _pack(checks: BoundaryChecks, model: Any, images: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    checks.pack(model.modality("image"), images)
    return time.perf_counter() - start


def measure(repeats: int, warmup: int) -> dict[str, Any]:
    """``repeats`` pairs of steps, one with the checks on and one off, back to back (the order
    alternates, so a drift of the machine's load favours neither), after ``warmup`` steps."""
    torch.manual_seed(0)
    model = atoken.create_tokenizer("small", modalities=["image"]).train()
    images = _images()
    on = model.boundary
    off = attrs.evolve(on, enabled=False)
    if not on.enabled:
        raise SystemExit("the checks should be on by default")
    for _ in range(warmup):
        _step(model, images)
    steps: dict[str, list[float]] = {"on": [], "off": []}
    packs: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(repeats):
        order = (("on", on), ("off", off)) if i % 2 == 0 else (("off", off), ("on", on))
        for side, checks in order:
            model.boundary = checks
            steps[side].append(_step(model, images))
            packs[side].append(min(_pack(checks, model, images) for _ in range(5)))
    model.boundary = on
    tokens = sum(-(-s // 16) * -(-(s + 32) // 16) for s in SIDES)
    best = {k: min(v) for k, v in steps.items()}
    pack = {k: min(v) for k, v in packs.items()}
    paired = sorted(a / b for a, b in zip(steps["on"], steps["off"], strict=True))
    return {
        "preset": "small",
        "images": len(SIDES),
        "tokens": tokens,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "step_seconds": best,
        "step_ratio_best": best["on"] / best["off"],
        "step_ratio_paired_median": statistics.median(paired),
        "step_ratio_paired_quartiles": statistics.quantiles(paired, n=4)[::2],
        "pack_seconds": pack,
        "checks_share_of_step": (pack["on"] - pack["off"]) / best["off"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=12, help="pairs of steps (on, off)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, default=HERE / "boundary_checks.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    r = measure(args.repeats, args.warmup)
    s, p = r["step_seconds"], r["pack_seconds"]
    low, high = r["step_ratio_paired_quartiles"]
    print(
        f"step   : small preset, {r['images']} images ({r['tokens']} tokens), forward + "
        f"backward, {r['threads']} thread(s), {r['repeats']} pairs"
    )
    print(f"         best: checks on {s['on'] * 1e3:.1f} ms, off {s['off'] * 1e3:.1f} ms")
    print(
        f"ratio  : on / off = {r['step_ratio_paired_median']:.4f} (median of the pairs; "
        f"quartiles {low:.4f}..{high:.4f}), {r['step_ratio_best']:.4f} (best of each); "
        f"goal <= {GOAL}"
    )
    print(
        f"pack   : checked {p['on'] * 1e3:.2f} ms, unchecked {p['off'] * 1e3:.2f} ms: the "
        f"checks are {r['checks_share_of_step']:.2%} of the step"
    )
    ok = r["step_ratio_paired_median"] <= GOAL and r["checks_share_of_step"] <= GOAL - 1
    print("verdict:", "within 2%" if ok else "ABOVE 2%")
    args.json.write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
