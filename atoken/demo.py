"""``make demo``: train the tiny preset on real photos on this CPU and compare it with PCA.

1. Fits the best linear tokenizer with the same latent size (PCA of 16 x 16 x 3 training
   patches keeping ``latent_dim`` components) on crops from the training sampler; with
   ``pca_init`` (as in the demo's run file) the tokenizer starts as exactly that PCA.
2. Trains the run file ``configs/demo.toml`` (the tiny preset, KL latent of 32 channels per
   16 x 16 patch) on random crops of the photos bundled with scikit-image and scikit-learn,
   within a wall-clock budget.
3. Reconstructs the held-out photos (astronaut, coffee, flower: never trained on) with both,
   prints PSNR, SSIM and the EfficientNet Fréchet distance side by side, and writes
   ``runs/demo/summary.json`` and ``runs/demo/heldout_side_by_side.png``.
4. Writes the run's page, ``runs/demo/report.html`` (``atoken report``), and prints its path.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from atoken.engine.runconfig import load_run_file
from atoken.plugins.manager import get_registry
from atoken.report import write_report
from atoken.tasks import evaluate_samples
from atoken.train import fit_pca, run_training
from atoken.viz import save_side_by_side

__all__ = ["main"]


def _row(name: str, values: dict[str, float]) -> str:
    return (
        f"{name:<26}{values.get('psnr', float('nan')):>10.2f}"
        f"{values.get('ssim', float('nan')):>8.4f}{values.get('fd_effnet', float('nan')):>12.2f}"
        f"{values.get('fd_effnet_mean', float('nan')):>10.2f}"
        f"{values.get('fd_effnet_cov', float('nan')):>10.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/demo.toml")
    parser.add_argument("--minutes", type=float, default=None, help="training time budget")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default=None, help="output folder (default: the run file's)")
    args = parser.parse_args(argv)

    overrides: dict = {}
    train = {
        k: v for k, v in (("max_minutes", args.minutes), ("steps", args.steps)) if v is not None
    }
    if train:
        overrides["train"] = train
    if args.out:
        overrides["run"] = {"out_dir": args.out}
    cfg = load_run_file(args.config, **overrides)
    out = cfg.run.output
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"atoken demo: training preset {cfg.model.preset!r} on bundled real photos for at most "
        f"{cfg.train.max_minutes or 'unlimited'} min / {cfg.train.steps} steps -> {out}"
    )

    start = time.monotonic()
    text = Path(args.config).read_text(encoding="utf-8")  # kept in the run folder as run.toml
    trainer, _ = run_training(cfg, overwrite=True, run_file_text=text)  # rerun each time
    train_minutes = (time.monotonic() - start) / 60
    model = trainer.eval_model
    model.eval()
    mixture = trainer.task
    task = mixture.tasks[0]  # the run file's image reconstruction task
    heldout, names = list(task.source.heldout), task.source.heldout_names

    # The best linear tokenizer with the same latent size, fitted on crops of the same photos
    # (with pca_init the tokenizer started as this very PCA).
    pca = mixture.pca
    if pca is None:
        pca = fit_pca(task, latent_dim=model.config.latent_dim)

    metrics = {m: get_registry().metrics.create(m) for m in ("psnr", "ssim", "fd_effnet")}
    ours_images = task.reconstruct_heldout(model)
    pca_images = pca.reconstruct(heldout)
    ours = evaluate_samples(metrics, ours_images, heldout)
    base = evaluate_samples(metrics, pca_images, heldout)

    picture = save_side_by_side(
        heldout,
        ours_images,
        out / "heldout_side_by_side.png",
        labels=names,
        columns=("original", "atoken tiny", f"PCA-{pca.latent_dim}"),
        extra=[pca_images],
    )
    summary = {
        "heldout_psnr": ours["psnr"],
        "pca_psnr": base["psnr"],
        "heldout_ssim": ours["ssim"],
        "pca_ssim": base["ssim"],
        "heldout_fd_effnet": ours["fd_effnet"],
        "pca_fd_effnet": base["fd_effnet"],
        "heldout": list(names),
        "steps": trainer.step,
        "train_minutes": round(train_minutes, 2),
        "latent_dim": model.config.latent_dim,
        "pca_init": mixture.pca is not None,
        "preset": cfg.model.preset,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    print(
        f"\nHeld-out photos ({', '.join(names)}), never trained on; "
        f"{trainer.step} steps in {train_minutes:.1f} min"
    )
    print(
        f"{'tokenizer':<26}{'PSNR dB':>10}{'SSIM':>8}{'FD effnet':>12}{'FD mean':>10}{'FD cov':>10}"
    )
    print(_row(f"atoken {cfg.model.preset} (KL {model.config.latent_dim})", ours))
    print(_row(f"PCA, {pca.latent_dim} components/patch", base))
    verdict = "beats" if ours["psnr"] > base["psnr"] else "does NOT beat"
    print(f"\natoken {verdict} the best linear tokenizer by {ours['psnr'] - base['psnr']:+.2f} dB")
    if mixture.pca is not None:
        print("(pca_init: atoken started as this PCA; the difference is what training added)")
    print(f"wrote {out / 'summary.json'}, {picture}, {out / 'metrics.jsonl'}, {out / 'tokenizer'}")
    report = write_report(out)
    print(f"report (open it in a browser): {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
