"""Image reconstruction quality on this CPU: atoken vs the best linear tokenizer, and ablations.

Every run is the ``make demo`` recipe (configs/demo.toml: MSE, KL latent of 32 channels per
16 x 16 patch, started as PCA with ``pca_init``) on the same bundled photos for the same number
of optimizer steps, evaluated on the same held-out photos (astronaut, coffee, flower; never
trained on):

    kl          the demo recipe
    kl scratch  the same without pca_init (random start, lr 3e-3, the pre-pca_init recipe)
    kl+gram     the demo recipe + Gram loss on EfficientNet-Lite0 features (--gram-weight)
    fsq         FSQ latent of 8 groups x [4, 4, 4, 4] (32 channels, 256 codes per group),
                random start (pca_init needs a KL latent; the paper fine-tunes FSQ from KL)
    pca         PCA of 16 x 16 x 3 training patches with 32 components (the best linear tokenizer)

It prints held-out PSNR, SSIM and the EfficientNet Fréchet distance split into its mean and
covariance terms, the FSQ vs KL gap, the Gram on/off change of the FD covariance share, and
bf16 vs fp32 training steps per second measured side by side on the same batches. Results go
to benchmarks/image_quality.json and a side-by-side picture to docs/images/.

    python benchmarks/image_quality.py --preset tiny --steps 600    # about 25 minutes here
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import attrs
import torch

from atoken.core.runconfig import RunConfig, load_run_file
from atoken.core.trainer import Trainer
from atoken.plugins.manager import get_registry
from atoken.tasks import evaluate_samples
from atoken.train import build_run, fit_pca, run_training
from atoken.viz import save_side_by_side

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.toml"


SCRATCH = {"pca_init": False, "overrides": {"final_norm": False}}  # the pre-pca_init recipe
SCRATCH_OPTIM = {"lr": 3e-3, "min_lr": 1e-4, "encoder_lr_mult": 0.1}


def demo_weights() -> tuple[float, float]:
    """(reconstruction weight, KL weight) of configs/demo.toml's task: its ``mse`` and ``kl``
    loss weights (0.2 and 1e-8)."""
    weights = {t.name: t.weight for t in load_run_file(DEMO).tasks[0].losses or ()}
    return weights["mse"], weights["kl"]


def run_config(name: str, args: argparse.Namespace, **model: object) -> RunConfig:
    """The recipe of ``make demo`` (configs/demo.toml) with this run's components and budget.

    Losses: ``rec * (mse + gram_weight * gram)`` (gram only in ``kl+gram``) + ``kl_weight *
    kl``, the demo's weights; an FSQ latent has no KL term, so FSQ runs list none.
    """
    rec, kl = demo_weights()
    losses = [{"name": "mse", "weight": rec}]
    if name == "kl+gram":
        losses.append({"name": "gram", "weight": rec * args.gram_weight})
    if model.get("bottleneck", "kl") != "fsq":
        losses.append({"name": "kl", "weight": kl})
    optim = SCRATCH_OPTIM if model.get("pca_init") is False else {}
    return load_run_file(
        DEMO,
        run={"name": name, "out_dir": str(Path(args.work) / name.replace("+", "_")), "seed": 0},
        model={"preset": args.preset, **model},
        optim=optim,
        train={
            "steps": args.steps,
            "max_minutes": args.minutes,
            "precision": "fp32",
            "eval_every": 0,
            "checkpoint_every": 0,
            "log_every": 50,
            "progress": False,
        },
        tasks=[{"data": {"batch_size": args.batch_size}, "losses": losses, "metrics": ["psnr"]}],
    )


def steps_per_second(cfg: RunConfig, precision: str, steps: int) -> float:
    """Training steps/s of a fresh model under ``precision`` (after 2 warm-up steps; no PCA
    start, which does not change a step's cost)."""
    torch.manual_seed(0)
    cfg = attrs.evolve(
        cfg,
        model=attrs.evolve(cfg.model, pca_init=False),
        train=attrs.evolve(cfg.train, precision=precision, ema_decay=0.0),
    )
    _, mixture = build_run(cfg)
    trainer = Trainer(cfg, mixture)
    for _ in range(2):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--minutes", type=float, default=0.0, help="time cap per run, 0: none")
    parser.add_argument("--batch-size", type=int, default=8)
    # The paper weighs its (unspecified) Gram term by 1e3; our EfficientNet-Lite0 Gram term is
    # ~10x the L1 term on blurry reconstructions, so 0.1 puts it on the scale of L1 + MSE.
    parser.add_argument("--gram-weight", type=float, default=0.1)
    parser.add_argument("--speed-steps", type=int, default=6)
    parser.add_argument("--work", default="runs/image_quality")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "image_quality.json"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "images" / "image_quality.jpg"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)

    fd = {m: get_registry().metrics.create(m) for m in ("psnr", "ssim", "fd_effnet")}
    results: dict[str, dict] = {}
    images: dict[str, list[torch.Tensor]] = {}
    runs = {
        "kl": {},
        "kl scratch": SCRATCH,
        "kl+gram": {},
        "fsq": {
            **SCRATCH,
            "bottleneck": "fsq",
            "bottleneck_params": {"levels": [4, 4, 4, 4], "groups": 8},
        },
    }
    mixture = task = cfg = None
    for name, model in runs.items():
        cfg = run_config(name, args, **model)
        start = time.monotonic()
        trainer, _ = run_training(cfg)
        mixture = trainer.task  # the run's TaskMixture; its one task reconstructs the photos
        task = mixture.tasks[0]
        recon = task.reconstruct_heldout(trainer.eval_model.eval())
        images[name] = recon
        results[name] = {
            **evaluate_samples(fd, recon, task.source.heldout),
            "steps": trainer.step,
            "minutes": round((time.monotonic() - start) / 60, 2),
        }
        print(f"{name:<10} {results[name]}", flush=True)
        Path(args.json).write_text(json.dumps({"partial": True, "runs": results}, indent=2))

    heldout, names = task.source.heldout, task.source.heldout_names
    pca = mixture.pca if mixture.pca is not None else fit_pca(task, latent_dim=cfg.model.latent_dim)
    images["pca"] = pca.reconstruct(heldout)
    results["pca"] = evaluate_samples(fd, images["pca"], heldout)

    speed_cfg = run_config("speed", args)
    fp32 = steps_per_second(speed_cfg, "fp32", args.speed_steps)
    bf16 = steps_per_second(speed_cfg, "bf16", args.speed_steps)

    def cov_share(r: dict) -> float:
        return r["fd_effnet_cov"] / r["fd_effnet"] if r["fd_effnet"] else float("nan")

    summary = {
        "preset": args.preset,
        "steps_per_run": args.steps,
        "runs": results,
        "fsq_minus_kl_psnr": results["fsq"]["psnr"] - results["kl"]["psnr"],
        "kl_minus_pca_psnr": results["kl"]["psnr"] - results["pca"]["psnr"],
        "pca_init_gain_psnr": results["kl"]["psnr"] - results["kl scratch"]["psnr"],
        "fd_cov_share": {k: cov_share(v) for k, v in results.items()},
        "steps_per_s": {"fp32": fp32, "bf16": bf16, "bf16_over_fp32": bf16 / fp32},
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
    }
    Path(args.json).write_text(json.dumps(summary, indent=2))
    save_side_by_side(
        heldout,
        images["kl"],
        args.picture,
        labels=names,
        columns=("original", "kl", "kl scratch", "kl+gram", "fsq", "pca-32"),
        extra=[images["kl scratch"], images["kl+gram"], images["fsq"], images["pca"]],
    )

    print(
        f"\nHeld-out photos {', '.join(names)}; preset {args.preset}, "
        f"{args.steps} training steps per run on this CPU"
    )
    print(
        f"{'tokenizer':<12}{'steps':>7}{'min':>6}{'PSNR dB':>9}{'SSIM':>8}{'FD':>9}{'FD mean':>9}"
        f"{'FD cov':>9}{'cov share':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<12}{r.get('steps', 0):>7}{r.get('minutes', 0):>6.1f}"
            f"{r['psnr']:>9.2f}{r['ssim']:>8.4f}"
            f"{r['fd_effnet']:>9.2f}{r['fd_effnet_mean']:>9.2f}{r['fd_effnet_cov']:>9.2f}"
            f"{cov_share(r):>10.1%}"
        )
    print(
        f"KL - PCA PSNR: {summary['kl_minus_pca_psnr']:+.2f} dB; "
        f"FSQ - KL PSNR: {summary['fsq_minus_kl_psnr']:+.2f} dB; "
        f"pca_init vs scratch: {summary['pca_init_gain_psnr']:+.2f} dB"
    )
    print(f"training steps/s: fp32 {fp32:.3f}, bf16 {bf16:.3f} (bf16/fp32 = {bf16 / fp32:.2f}x)")
    print(f"wrote {args.json} and {args.picture}")


if __name__ == "__main__":
    main()
