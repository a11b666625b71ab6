"""Understanding on this CPU: zero-shot digits from a tokenizer aligned to a frozen text tower.

scikit-learn's 1797 handwritten digits (8 x 8, upsampled to 64 x 64) are captioned from their
labels ("a photo of the digit three") and split per class into train and held-out sets (80/20,
fixed seed). The tiny preset is trained twice from the same seed on the same batches, for the
same number of steps (configs/understanding.toml):

    joint     0.2 L_rec + 1.0 L_sem + 1e-8 L_KL, L_sem the SigLIP loss against frozen MiniLM
    rec-only  0.2 L_rec + 1e-8 L_KL (the semantic loss off)

Printed, on the held-out digits: zero-shot accuracy from the ten class captions (chance 10%),
a linear probe (scikit-learn LogisticRegression on standardised features, fitted on the train
images' embeddings) on the same embeddings (meant as the ceiling; after short joint training
it is not, see docs/results.md), reconstruction PSNR with the
semantic loss on and off, and retrieval recall@1 in both directions (the texts are the ten
class captions; text -> image counts any image of the class). Results go to
benchmarks/understanding.json.

A third, shorter joint run at 32 x 32 (``--small-steps``) shows the same recipe where a digit
fills its 4 tokens instead of 4 of 16 (at 64 x 64 most tokens are background, so the MAP head's
pooled embeddings of all digits start nearly identical, cosine 0.97 vs 0.83 at 32 x 32).

    python benchmarks/understanding.py     # step-bounded; ~25-30 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from atoken.engine.runconfig import load_run_file
from atoken.plugins.manager import get_registry
from atoken.tasks.alignment import embed_in_chunks
from atoken.train import run_training

ROOT = Path(__file__).resolve().parents[1]
RUN_FILE = ROOT / "configs" / "understanding.toml"


def linear_probe(train_x, train_y, test_x, test_y) -> float:
    """Held-out accuracy of a logistic regression fitted on the standardised train embeddings
    (standardised: the normalised embeddings of one model can differ in tiny directions)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    clf.fit(train_x.numpy(), train_y.numpy())
    return float((clf.predict(test_x.numpy()) == test_y.numpy()).mean())


def run(
    name: str, args: argparse.Namespace, sem_weight: float, size: int = 64, steps: int = 0
) -> dict:
    """Train the run file's text_alignment task on digits of side ``size``, its semantic
    (``"embeddings"``) losses scaled by ``sem_weight`` (0: left out, L_rec + L_KL only)."""
    spec = load_run_file(RUN_FILE).tasks[0]
    registry = get_registry().losses
    losses = []
    for term in spec.losses or ():
        semantic = getattr(registry.get(term.name), "inputs", "samples") == "embeddings"
        weight = term.weight * (sem_weight if semantic else 1.0)
        if weight:
            losses.append({"name": term.name, "weight": weight, "params": dict(term.params)})
    cfg = load_run_file(
        RUN_FILE,
        run={"name": name, "out_dir": str(Path(args.work) / name), "seed": args.seed},
        train={"steps": steps or args.steps, "progress": args.progress},
        tasks=[{"data": {"batch_size": args.batch_size, "size": size}, "losses": losses}],
    )
    start = time.monotonic()
    trainer, logged = run_training(cfg)
    minutes = (time.monotonic() - start) / 60
    model, task = trainer.eval_model.eval(), trainer.task.tasks[0]
    # the final metrics are prefixed by the task's label: text_alignment/psnr
    metrics = {k.removeprefix(f"{task.label}/"): v for k, v in logged.items()}
    train_set, held_set = task.source.train_set, task.source.heldout_set
    with torch.no_grad():
        train_emb = embed_in_chunks(model, train_set.images)  # [n_train, D]
        held_emb = embed_in_chunks(model, held_set.images)  # [n_held, D]
    probe = linear_probe(train_emb, train_set.labels, held_emb, held_set.labels)
    out = {
        "steps": trainer.step,
        "minutes": round(minutes, 2),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "zeroshot_top1": metrics["zeroshot_top1"],
        "zeroshot_top5": metrics["zeroshot_top5"],
        "linear_probe": probe,
        "i2t_r1": metrics["i2t_r1"],
        "t2i_r1": metrics["t2i_r1"],
        "i2t_r5": metrics["i2t_r5"],
        "t2i_r5": metrics["t2i_r5"],
        "logit_scale": float(model.semantic.logit_scale.detach().exp()),
        "n_train": len(train_set),
        "n_heldout": len(held_set),
    }
    print(f"{name:<9} {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=900, help="training steps per 64 px run")
    parser.add_argument(
        "--small-steps", type=int, default=500, help="steps of the extra 32 px joint run (0: skip)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--work", default="runs/understanding_bench")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "understanding.json"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    joint = run("joint", args, sem_weight=1.0)
    rec_only = run("rec-only", args, sem_weight=0.0)
    small = None
    if args.small_steps:
        small = run("joint-32", args, 1.0, size=32, steps=args.small_steps)
    summary = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "joint": joint,
        "rec_only": rec_only,
        "joint_32px": small,
        "psnr_cost_of_semantic_db": rec_only["psnr"] - joint["psnr"],
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    Path(args.json).write_text(json.dumps(summary, indent=2))

    print(
        f"\nHeld-out digits: {joint['n_heldout']} images (train {joint['n_train']}), 10 classes, "
        f"64 x 64; tiny preset, {args.steps} steps of batch {args.batch_size} per run"
    )
    print(f"{'':<28}{'joint':>10}{'rec-only':>10}")
    rows = [
        ("zero-shot top-1 (chance 10%)", "zeroshot_top1", True),
        ("zero-shot top-5", "zeroshot_top5", True),
        ("linear probe (same embeddings)", "linear_probe", True),
        ("recall@1 image->text", "i2t_r1", True),
        ("recall@1 text->image", "t2i_r1", True),
        ("recall@5 image->text", "i2t_r5", True),
        ("recall@5 text->image", "t2i_r5", True),
        ("reconstruction PSNR dB", "psnr", False),
        ("reconstruction SSIM", "ssim", False),
        ("minutes", "minutes", False),
    ]
    for label, key, pct in rows:
        a, b = joint[key], rec_only[key]
        fmt = (lambda v: f"{v:>10.1%}") if pct else (lambda v: f"{v:>10.3f}")
        print(f"{label:<28}{fmt(a)}{fmt(b)}")
    print(
        f"PSNR with the semantic loss on minus off: {-summary['psnr_cost_of_semantic_db']:+.2f} dB"
    )
    if small:
        print(
            f"Same recipe at 32 x 32 ({small['steps']} steps, 4 tokens per digit instead of 16): "
            f"zero-shot top-1 {small['zeroshot_top1']:.1%}, linear probe "
            f"{small['linear_probe']:.1%}, recall@1 image->text {small['i2t_r1']:.1%}, "
            f"text->image {small['t2i_r1']:.1%}, PSNR {small['psnr']:.2f} dB"
        )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
