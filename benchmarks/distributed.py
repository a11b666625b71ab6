"""Training throughput at 1 and 2 processes, and memory per rank with DDP vs FSDP2.

Every measurement trains the same run (the small preset, or --preset, on the bundled photos
at a fixed crop size, so every step has the same tokens) through ``atoken.train.run_training``
in fresh processes: one process alone (``torch`` threads: all cores), then two processes
under torchrun (one thread each) with ``[distributed] strategy = "ddp"`` and ``"fsdp"``, the
same global batch split over the ranks. It prints steps/s and tokens/s (timed steps after the
warm-up ones), and each rank's peak resident memory above what the process held before the
model was built (``VmHWM``, reset first: the model as built before sharding, params,
gradients, AdamW state, EMA, activations, the allocator's slack) and the bytes it holds in
parameters, gradients, AdamW state and EMA after the steps (``state``, exact). ``step peak``
is the peak of the timed steps alone (VmHWM reset after the warm-up, above the same base):
what training holds once the model is sharded and the optimizer state exists.

    python benchmarks/distributed.py                  # about 6 minutes here
    python benchmarks/distributed.py --preset tiny --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss_bytes, reset_peak_rss, rss_bytes

ROOT = Path(__file__).resolve().parents[1]


def run_file(out: Path, args: argparse.Namespace, strategy: str, world: int) -> Path:
    crop, batch = args.crop, args.global_batch // world
    text = f"""
[run]
name = "bench"
out_dir = "{out}"
[model]
preset = "{args.preset}"
[optim]
warmup_steps = 1
[train]
steps = {args.warmup + args.steps}
precision = "fp32"
ema_decay = 0.999
log_every = 1
progress = false
[distributed]
strategy = "{strategy}"
timeout = 600.0
[[tasks]]
name = "image_reconstruction"
data = {{ source = "photos", batch_size = {batch}, crop_min = {crop}, crop_max = {crop} }}
losses = [{{ name = "mse" }}, {{ name = "kl", weight = 1e-8 }}]
metrics = ["psnr"]
previews = 0
"""
    path = out.with_suffix(".toml")
    path.write_text(text)
    return path


def _bytes(t: torch.Tensor) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t  # an FSDP2 shard: this rank's part
    return local.numel() * local.element_size()


def state_bytes(trainer) -> int:
    """Bytes this rank holds in parameters, gradients, AdamW state and EMA."""
    total = sum(
        _bytes(p) + (_bytes(p.grad) if p.grad is not None else 0)
        for p in trainer.module.parameters()
    )
    for state in trainer.optimizer.state.values():
        total += sum(_bytes(v) for v in state.values() if isinstance(v, torch.Tensor) and v.ndim)
    ema = trainer.ema
    if ema is not None:
        tensors = (
            ema.shadow.values() if hasattr(ema, "shadow") else ema.module.state_dict().values()
        )
        total += sum(_bytes(t) for t in tensors)
    return total


def worker(path: str, report: str, warmup: int) -> None:
    """Train the run file; each rank writes its timings and peak memory to ``report.RANK``."""
    from atoken.engine.runconfig import load_run_file
    from atoken.engine.trainer import Trainer
    from atoken.train import build_run

    cfg = load_run_file(path)
    reset_peak_rss()
    base = rss_bytes()
    _, mixture = build_run(cfg)
    trainer = Trainer(cfg, mixture, device="cpu")
    times = []
    for i in range(cfg.train.steps):
        if i == warmup:  # the setup's peak is over: what the training steps need from here
            setup_peak = peak_rss_bytes()
            reset_peak_rss()
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
    timed = times[warmup:]
    rank = trainer.dist.rank
    out = {
        "rank": rank,
        "world": trainer.dist.world,
        "threads": torch.get_num_threads(),
        "steps_per_s": len(timed) / sum(timed),
        "peak_mb": (max(setup_peak, peak_rss_bytes()) - base) / 2**20,
        "train_peak_mb": (peak_rss_bytes() - base) / 2**20,
        "state_mb": state_bytes(trainer) / 2**20,
        "params": sum(p.numel() for p in trainer.module.parameters()),
    }
    Path(f"{report}.{rank}").write_text(json.dumps(out))


def measure(args: argparse.Namespace, work: Path, strategy: str, world: int) -> list[dict]:
    out = work / f"{strategy}_{world}"
    path = run_file(out, args, strategy, world)
    report = work / f"{strategy}_{world}.json"
    me = [str(Path(__file__).resolve()), "--worker", str(path), str(report), str(args.warmup)]
    if world == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc-per-node={world}", *me]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return [json.loads(Path(f"{report}.{r}").read_text()) for r in range(world)]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "distributed.json"))
    args = parser.parse_args()
    tokens = args.global_batch * (args.crop // 16) ** 2  # tokens per optimizer step
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, strategy, world in [
            ("1 process", "ddp", 1),
            ("2 x ddp", "ddp", 2),
            ("2 x fsdp", "fsdp", 2),
        ]:
            ranks = measure(args, Path(tmp), strategy, world)
            results[name] = ranks
            print(f"{name}: {ranks}", flush=True)
    print(
        f"\npreset {args.preset} ({results['1 process'][0]['params'] / 1e6:.1f}M parameters), "
        f"global batch {args.global_batch} crops of {args.crop} px = {tokens} tokens per step, "
        f"{args.steps} timed steps after {args.warmup}; {os.cpu_count()} cores, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"{'run':<12}{'threads':>8}{'steps/s':>9}{'tokens/s':>10}{'state MB/rank':>15}"
        f"{'peak MB/rank':>14}{'step peak MB/rank':>19}"
    )
    for name, ranks in results.items():
        sps = min(r["steps_per_s"] for r in ranks)  # a step ends when the slowest rank ends
        peak = max(r["peak_mb"] for r in ranks)
        state = max(r["state_mb"] for r in ranks)
        step_peak = max(r["train_peak_mb"] for r in ranks)
        print(
            f"{name:<12}{ranks[0]['threads']:>8}{sps:>9.3f}{sps * tokens:>10.1f}{state:>15.0f}"
            f"{peak:>14.0f}{step_peak:>19.0f}"
        )
    one = min(r["steps_per_s"] for r in results["1 process"])
    ddp = min(r["steps_per_s"] for r in results["2 x ddp"])
    mem = {k: max(r["peak_mb"] for r in v) for k, v in results.items()}
    held = {k: max(r["state_mb"] for r in v) for k, v in results.items()}
    steps = {k: max(r["train_peak_mb"] for r in v) for k, v in results.items()}
    print(
        f"2 processes / 1: {ddp / one:.2f}x steps/s (ddp); FSDP2 / DDP per rank: "
        f"{held['2 x fsdp'] / held['2 x ddp']:.2f}x the state, "
        f"{mem['2 x fsdp'] / mem['2 x ddp']:.2f}x the peak memory, "
        f"{steps['2 x fsdp'] / steps['2 x ddp']:.2f}x the peak of the training steps"
    )
    Path(args.json).write_text(json.dumps({"tokens_per_step": tokens, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
