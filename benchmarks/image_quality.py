"""Image reconstruction quality on this CPU: atoken vs the best linear tokenizer, ablations,
and FSQ as stage 4 measured at equal bits.

Every run is the ``make demo`` recipe (configs/demo.toml: MSE, KL latent of 32 channels per
16 x 16 patch, started as PCA with ``pca_init``) on the same bundled photos, evaluated on the
same held-out photos (astronaut, coffee, flower; never trained on):

    kl            the demo recipe, --steps steps (stage "kl" of the fsq-from-kl run)
    fsq from kl   stage 4: that KL checkpoint, then --fsq-steps steps of FSQ fine-tuning
                  (``to_fsq``: 8 groups x [4, 4, 4, 4] on the posterior mean, calibrated on
                  the training crops; the same MSE loss, no KL term), one [[stages]] run
    fsq alloc     the same, with ``to_fsq(bits=64)``: the 64 bits allocated over the channels
                  on the calibration crops (levels 2 ** bits per channel, 8 balanced groups)
    fsq scratch   the same FSQ latent from a random start for --steps + --fsq-steps steps
    kl scratch    the demo recipe without pca_init (random start, lr 3e-3)
    kl+gram       the demo recipe + Gram loss on EfficientNet-Lite0 features (--gram-weight)
    tc uniform    transform coding: the PCA's 32 components, each uniformly quantized to 4
                  levels (2 bits): the same 64 bits per token as the FSQ latent
    tc optimal    the same 64 bits handed out by greedy optimal bit allocation
    pca           PCA of 16 x 16 x 3 training patches with 32 components (continuous)

It prints held-out PSNR, SSIM and the EfficientNet Fréchet distance split into its mean and
covariance terms with the bits per token of each discrete tokenizer, the FSQ codebook usage
and perplexity per group, the FSQ gaps, the Gram on/off change of the FD covariance share, and
bf16 vs fp32 training steps per second measured side by side on the same batches. Results go
to benchmarks/image_quality.json and a side-by-side picture to docs/images/.

    python benchmarks/image_quality.py --preset tiny --steps 600    # about 35 minutes here
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import attrs
import torch

from atoken.baselines import TransformCoder
from atoken.engine.runconfig import RunConfig, load_run_file, structure
from atoken.engine.trainer import Trainer
from atoken.plugins.bottlenecks.fsq import codebook_usage_per_group
from atoken.plugins.manager import get_registry
from atoken.tasks import evaluate_samples
from atoken.tokenizer import Tokenizer
from atoken.train import PCA_CROP_BATCHES, build_run, fit_pca, run_training
from atoken.viz import save_side_by_side

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.toml"


SCRATCH = {"pca_init": False, "overrides": {"final_norm": False}}  # the pre-pca_init recipe
SCRATCH_OPTIM = {"lr": 3e-3, "min_lr": 1e-4, "encoder_lr_mult": 0.1}
#: The discrete latent: 32 channels (the KL latent's width) at 4 levels, 64 bits per token.
FSQ = {"levels": [4, 4, 4, 4], "groups": 8}
FSQ_BITS = FSQ["groups"] * len(FSQ["levels"]) * 2


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


def fsq_from_kl_config(args: argparse.Namespace, *, allocate: bool = False) -> RunConfig:
    """Two [[stages]]: the demo recipe (stage "kl", pca_init) for ``--steps``, then FSQ
    fine-tuning (stage "fsq", to_fsq) for ``--fsq-steps`` with the same MSE loss.
    ``allocate``: ``to_fsq`` hands out the same bits per channel (``bits = FSQ_BITS``)."""
    name = "fsq alloc" if allocate else "fsq from kl"
    data = run_config("kl", args).to_dict()
    data["run"].update(name=name, out_dir=str(Path(args.work) / name.replace(" ", "_")))
    data["model"]["pca_init"] = False  # the first stage's transform instead
    del data["train"]["steps"]  # the stages' sum
    task = data["tasks"][0]
    task["label"] = "kl"
    fsq_task = {**task, "label": "fsq", "losses": [t for t in task["losses"] if t["name"] != "kl"]}
    data["stages"] = [
        {"name": "kl", "steps": args.steps, "tasks": ["kl"], "transforms": [{"name": "pca_init"}]},
        {
            "name": "fsq",
            "steps": args.fsq_steps,
            "tasks": [fsq_task],
            "optim": {"lr": args.fsq_lr, "warmup_steps": 20},
            "transforms": [
                {"name": "to_fsq", "groups": FSQ["groups"], "bits": FSQ_BITS}
                if allocate
                else {"name": "to_fsq", **FSQ}
            ],
        },
    ]
    return structure(RunConfig, data, "benchmark")


def codebooks(model: Tokenizer, images: list[torch.Tensor]) -> list[dict[str, float]]:
    """Codebook usage and perplexity per FSQ group on the tokens of ``images``."""
    with torch.no_grad():
        ids = model.tokenize(images).ids
    sizes = model.bottleneck.codebook_sizes
    stats = codebook_usage_per_group(ids, sizes)
    return [{**g, "size": size} for g, size in zip(stats, sizes, strict=True)]


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
    parser.add_argument("--fsq-steps", type=int, default=300, help="FSQ fine-tuning steps")
    parser.add_argument("--fsq-lr", type=float, default=3e-3, help="FSQ fine-tuning lr")
    parser.add_argument("--minutes", type=float, default=0.0, help="time cap per run, 0: none")
    parser.add_argument("--batch-size", type=int, default=8)
    # The paper weighs its (unspecified) Gram term by 1e3; our EfficientNet-Lite0 Gram term is
    # ~10x the L1 term on blurry reconstructions, so 0.1 puts it on the scale of L1 + MSE.
    parser.add_argument("--gram-weight", type=float, default=0.1)
    parser.add_argument("--speed-steps", type=int, default=6)
    parser.add_argument("--skip-ablations", action="store_true", help="no kl scratch, kl+gram")
    parser.add_argument("--work", default="runs/image_quality")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "image_quality.json"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "images" / "image_quality.jpg"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)

    fd = {m: get_registry().metrics.create(m) for m in ("psnr", "ssim", "fd_effnet")}
    results: dict[str, dict] = {}
    images: dict[str, list[torch.Tensor]] = {}
    groups: dict[str, list[dict[str, float]]] = {}

    def record(name: str, model: torch.nn.Module, steps: int, minutes: float, bits) -> None:
        recon = task.reconstruct_heldout(model.eval())
        images[name] = recon
        results[name] = {
            **evaluate_samples(fd, recon, task.source.heldout),
            "bits_per_token": bits,
            "steps": steps,
            "minutes": round(minutes, 2),
        }
        if getattr(model.bottleneck, "codebook_size", None):
            groups[name] = codebooks(model, task.source.heldout)
        print(f"{name:<12} {results[name]}", flush=True)
        Path(args.json).write_text(json.dumps({"partial": True, "runs": results}, indent=2))

    # stage 4: the KL checkpoint (stage "kl") and FSQ fine-tuned from it (stage "fsq")
    start = time.monotonic()
    trainer, _ = run_training(fsq_from_kl_config(args))
    minutes = (time.monotonic() - start) / 60
    task = trainer.task.tasks[0]  # the fsq stage's task: the same photos and held-out set
    kl_model = Tokenizer.from_pretrained(
        Path(args.work) / "fsq_from_kl" / "stages" / "kl" / "tokenizer"
    )
    share = args.steps / (args.steps + args.fsq_steps)
    record("kl", kl_model, args.steps, minutes * share, None)
    record("fsq from kl", trainer.eval_model, trainer.step, minutes, FSQ_BITS)
    start = time.monotonic()  # the same KL stage again (same seed), then allocated levels
    alloc, _ = run_training(fsq_from_kl_config(args, allocate=True))
    record("fsq alloc", alloc.eval_model, alloc.step, (time.monotonic() - start) / 60, FSQ_BITS)
    levels = alloc.eval_model.bottleneck.level_table  # [G, d]

    runs = {"fsq scratch": {**SCRATCH, "bottleneck": "fsq", "bottleneck_params": FSQ}}
    if not args.skip_ablations:
        runs = {"kl scratch": SCRATCH, "kl+gram": {}, **runs}
    for name, model in runs.items():
        cfg = run_config(name, args, **model)
        if name == "fsq scratch":  # the fine-tuned FSQ's whole budget
            cfg = attrs.evolve(
                cfg, train=attrs.evolve(cfg.train, steps=args.steps + args.fsq_steps)
            )
        start = time.monotonic()
        trainer, _ = run_training(cfg)
        bits = FSQ_BITS if name.startswith("fsq") else None
        record(name, trainer.eval_model, trainer.step, (time.monotonic() - start) / 60, bits)

    heldout, names = task.source.heldout, task.source.heldout_names
    crops = [x for step in range(PCA_CROP_BATCHES) for x in task.batch(step, 0)]
    pca = fit_pca(task, latent_dim=32)
    for allocation in ("uniform", "optimal"):
        coder = TransformCoder.fit(pca, crops, bits_per_token=FSQ_BITS, allocation=allocation)
        name = f"tc {allocation}"
        images[name] = coder.reconstruct(heldout)
        results[name] = {
            **evaluate_samples(fd, images[name], heldout),
            "bits_per_token": coder.bits_per_token,
            "bits": coder.bits,
        }
    images["pca"] = pca.reconstruct(heldout)
    results["pca"] = {**evaluate_samples(fd, images["pca"], heldout), "bits_per_token": None}

    speed_cfg = run_config("speed", args)
    fp32 = steps_per_second(speed_cfg, "fp32", args.speed_steps)
    bf16 = steps_per_second(speed_cfg, "bf16", args.speed_steps)

    def cov_share(r: dict) -> float:
        return r["fd_effnet_cov"] / r["fd_effnet"] if r["fd_effnet"] else float("nan")

    def gap(a: str, b: str) -> float:
        return (
            results[a]["psnr"] - results[b]["psnr"]
            if a in results and b in results
            else float("nan")
        )

    summary = {
        "preset": args.preset,
        "steps_per_run": args.steps,
        "fsq_steps": args.fsq_steps,
        "runs": results,
        "codebooks": groups,
        "fsq_from_kl_minus_kl_psnr": gap("fsq from kl", "kl"),
        "fsq_from_kl_minus_tc_uniform_psnr": gap("fsq from kl", "tc uniform"),
        "fsq_from_kl_minus_tc_optimal_psnr": gap("fsq from kl", "tc optimal"),
        "fsq_alloc_minus_kl_psnr": gap("fsq alloc", "kl"),
        "fsq_alloc_minus_tc_optimal_psnr": gap("fsq alloc", "tc optimal"),
        "fsq_alloc_levels": levels.tolist(),
        "fsq_scratch_minus_kl_psnr": gap("fsq scratch", "kl"),
        "kl_minus_pca_psnr": gap("kl", "pca"),
        "pca_init_gain_psnr": gap("kl", "kl scratch"),
        "fd_cov_share": {k: cov_share(v) for k, v in results.items()},
        "steps_per_s": {"fp32": fp32, "bf16": bf16, "bf16_over_fp32": bf16 / fp32},
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
    }
    Path(args.json).write_text(json.dumps(summary, indent=2))
    shown = ["fsq from kl", "fsq alloc", "fsq scratch", "tc uniform", "tc optimal", "pca"]
    save_side_by_side(
        heldout,
        images["kl"],
        args.picture,
        labels=names,
        columns=("original", "kl", *shown),
        extra=[images[k] for k in shown],
    )

    print(
        f"\nHeld-out photos {', '.join(names)}; preset {args.preset}, {args.steps} training "
        f"steps per run (fsq from kl: + {args.fsq_steps} fine-tuning steps; fsq scratch: "
        f"{args.steps + args.fsq_steps}) on this CPU"
    )
    print(
        f"{'tokenizer':<12}{'bits/tok':>9}{'steps':>7}{'min':>6}{'PSNR dB':>9}{'SSIM':>8}"
        f"{'FD':>9}{'FD mean':>9}{'FD cov':>9}{'cov share':>10}"
    )
    for name, r in results.items():
        bits = "cont." if r["bits_per_token"] is None else str(r["bits_per_token"])
        print(
            f"{name:<12}{bits:>9}{r.get('steps', 0):>7}{r.get('minutes', 0):>6.1f}"
            f"{r['psnr']:>9.2f}{r['ssim']:>8.4f}"
            f"{r['fd_effnet']:>9.2f}{r['fd_effnet_mean']:>9.2f}{r['fd_effnet_cov']:>9.2f}"
            f"{cov_share(r):>10.1%}"
        )
    print(f"tc optimal bits per component: {results['tc optimal']['bits']}")
    print(f"fsq alloc levels per group: {levels.tolist()}")
    for name, stats in groups.items():
        usage = " ".join(f"{g['usage']:.3f}" for g in stats)
        ppl = " ".join(f"{g['perplexity']:.1f}" for g in stats)
        print(f"{name} codebook usage per group: {usage}")
        sizes = " ".join(str(g["size"]) for g in stats)
        print(f"{name} perplexity per group (of {sizes}): {ppl}")
    print(
        f"FSQ from KL - KL: {summary['fsq_from_kl_minus_kl_psnr']:+.2f} dB; "
        f"- tc uniform: {summary['fsq_from_kl_minus_tc_uniform_psnr']:+.2f} dB; "
        f"- tc optimal: {summary['fsq_from_kl_minus_tc_optimal_psnr']:+.2f} dB; "
        f"FSQ scratch - KL: {summary['fsq_scratch_minus_kl_psnr']:+.2f} dB"
    )
    print(
        f"FSQ alloc from KL - KL: {summary['fsq_alloc_minus_kl_psnr']:+.2f} dB; "
        f"- tc optimal: {summary['fsq_alloc_minus_tc_optimal_psnr']:+.2f} dB"
    )
    print(
        f"KL - PCA PSNR: {summary['kl_minus_pca_psnr']:+.2f} dB; "
        f"pca_init vs scratch: {summary['pca_init_gain_psnr']:+.2f} dB"
    )
    print(f"training steps/s: fp32 {fp32:.3f}, bf16 {bf16:.3f} (bf16/fp32 = {bf16 / fp32:.2f}x)")
    print(f"wrote {args.json} and {args.picture}")


if __name__ == "__main__":
    main()
