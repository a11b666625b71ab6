"""The ``atoken`` command line (click). ``atoken --help`` lists the commands.

Plugins add commands through the ``register_commands`` hook when it is built (``main`` is a
:class:`atoken.plugins.commands.PluginCommandGroup`): ``atoken data import meshes`` is one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

import atoken
from atoken.cli_checkpoint import checkpoint
from atoken.cli_classify import classify
from atoken.cli_common import fail, load_tokenizer, table
from atoken.cli_convert import convert
from atoken.cli_data import data
from atoken.cli_encode import encode
from atoken.cli_report import report
from atoken.core.errors import AtokenError
from atoken.plugins.commands import PluginCommandGroup
from atoken.plugins.manager import diagnose_plugins, get_registry

__all__ = ["main", "plugins_report"]


def plugins_report() -> dict:
    """Every plugin (name, distribution, version, hooks, error) and every component by kind.

    A plugin that failed to load is listed too, after the others, with ``error`` set to
    ``{"type", "message", "stage"}`` (``None`` for plugins that loaded); none of its components
    are listed. So is a plugin whose ``register_commands`` failed the last time the command
    line was built (stage ``commands``; its components load, so they are listed). Nothing
    raises for a broken plugin: check ``error`` (``atoken plugins`` exits 1).
    """
    diagnosis = diagnose_plugins()
    loaded = {p.name for p in diagnosis.plugins}
    commands = [f for f in main.plugin_failures if f.name in loaded]
    failed = {f.name for f in commands}
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": list(p.hooks),
            "error": None,
        }
        for p in diagnosis.plugins
        if p.name not in failed
    ]
    plugins += [
        {
            "name": f.name,
            "distribution": f.distribution,
            "version": f.version,
            "hooks": list(f.hooks),
            "error": {"type": type(f.error).__name__, "message": str(f.error), "stage": f.stage},
        }
        for f in (*diagnosis.failures, *commands)
    ]
    return {
        "atoken_version": atoken.__version__,
        "plugins": plugins,
        "components": {
            kind: [{"name": n, "plugin": reg.plugin_of(n)} for n in reg.names()]
            for kind, reg in diagnosis.registries.by_kind().items()
        },
    }


@click.group(cls=PluginCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(atoken.__version__, prog_name="atoken")
def main() -> None:
    """atoken: a unified, plugin-based vision tokenizer."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins and the components they register.

    A plugin that fails to load is listed with its error, the others as usual, and the command
    exits with status 1.
    """
    try:
        report = plugins_report()
    except AtokenError as exc:
        raise click.ClickException(str(exc)) from exc
    broken = [p for p in report["plugins"] if p["error"] is not None]
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo("Plugins")
        rows = [
            (p["name"], p["distribution"], p["version"], "ok" if p["error"] is None else "FAILED")
            for p in report["plugins"]
        ]
        table(("plugin", "distribution", "version", "status"), rows)
        click.echo("\nComponents")
        rows = [
            (kind, c["name"], c["plugin"])
            for kind, comps in report["components"].items()
            for c in comps
        ]
        table(("kind", "name", "plugin"), rows)
        if broken:
            click.echo("\nFailed plugins")
            for p in broken:
                err = p["error"]
                click.echo(
                    f"{p['name']} (distribution {p['distribution']}, at {err['stage']}): "
                    f"{err['type']}: {err['message']}"
                )
    if broken:
        names = ",".join(p["name"] for p in broken)
        click.echo(
            f"Error: {len(broken)} plugin(s) failed to load: {names}. "
            f"Skip them with ATOKEN_DISABLE_PLUGINS={names}",
            err=True,
        )
        ctx.exit(1)


@main.command()
@click.argument("run_file", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue from the run's newest checkpoint.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run in the output folder (its log and checkpoints; other files stay).",
)
@click.option(
    "--force", is_flag=True, help="With --resume: accept a run file that differs from the run's."
)
@click.option(
    "--resume-from",
    "resume_from",
    default=None,
    metavar="step_N",
    help="Continue from this checkpoint of the run instead of the newest (implies --resume).",
)
@click.option(
    "--fallback",
    is_flag=True,
    help="With --resume: when the newest checkpoint is damaged, continue from the newest "
    "intact one (without it a damaged checkpoint is an error naming that one).",
)
@click.option("--steps", type=int, default=None, help="Override [train] steps.")
@click.option("--out", "out_dir", default=None, help="Override [run] out_dir.")
@click.option(
    "--device", default=None, help="Override [train] device: auto (CUDA if any), cpu, cuda[:N]."
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    help="Train on N processes of this machine (runs torchrun; [distributed] says how).",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=0,
    help="With --nproc: restart the process group this many times after a failure; each "
    "restart resumes from the last complete checkpoint.",
)
@click.option(
    "--plan",
    is_flag=True,
    help="Check the run file and print per stage its parameters, tokens, FLOPs and memory "
    "per rank (DDP and FSDP2) at --nproc ranks; nothing is trained or launched.",
)
def train(
    run_file: str,
    resume: bool,
    overwrite: bool,
    force: bool,
    resume_from: str | None,
    fallback: bool,
    steps: int | None,
    out_dir: str | None,
    device: str | None,
    nproc: int,
    max_restarts: int,
    plan: bool,
) -> None:
    """Train a tokenizer as RUN_FILE (TOML) describes.

    On several processes: ``atoken train --nproc N RUN.toml`` or, on a cluster,
    ``torchrun --nproc-per-node N -m atoken.cli train RUN.toml`` (docs/distributed.md).
    """
    from atoken.cli_distributed import launch, restarted
    from atoken.engine.distributed import TrainingStopped
    from atoken.engine.runconfig import load_run_file
    from atoken.train import run_training

    if plan:  # before any launch: with --plan, --nproc N plans for N ranks
        from atoken.cli_plan import print_plan

        try:
            return print_plan(run_file, nproc=nproc, device=device)
        except AtokenError as exc:
            raise fail(exc) from exc
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        ctx = click.get_current_context()
        raise SystemExit(launch(ctx.params, nproc=nproc, max_restarts=max_restarts))
    if restarted():  # torchrun restarted the group: continue from the last checkpoint
        resume, overwrite = True, False

    overrides: dict = {}
    if steps is not None or device is not None:
        overrides["train"] = {
            k: v for k, v in (("steps", steps), ("device", device)) if v is not None
        }
    if out_dir is not None:
        overrides["run"] = {"out_dir": out_dir}
    try:
        cfg = load_run_file(run_file, **overrides)
        text = Path(run_file).read_text(encoding="utf-8")
        trainer, metrics = run_training(
            cfg,
            resume=resume,
            overwrite=overwrite,
            force=force,
            run_file_text=text,
            resume_from=resume_from,
            fallback=fallback,
        )
    except TrainingStopped as exc:  # SIGTERM: saved and logged; 143 as a killed process
        raise SystemExit(exc.code) from exc
    except AtokenError as exc:
        raise fail(exc) from exc
    if trainer.dist.main:  # under torchrun, rank 0 reports
        click.echo(f"trained {trainer.step} steps; outputs in {cfg.run.output}")
        table(("metric", "value"), [(k, f"{v:.4f}") for k, v in metrics.items()])


@main.command()
@click.option("--checkpoint", required=True, help="A saved tokenizer or a run folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Videos: reconstruct only the first N frames (the written clips hold every frame in "
    "memory; the tiled Python API, atoken.tiling.iter_reconstruct, streams).",
)
@click.option(
    "--modality",
    default=None,
    help="The inputs' modality [default: by file: image files -> image, video files -> "
    "video]; .npy arrays (e.g. a depth map [H, W]) need it.",
)
@click.argument("inputs", nargs=-1, required=True)
def reconstruct(
    checkpoint: str,
    out_dir: str,
    inputs: tuple[str, ...],
    max_frames: int | None,
    modality: str | None,
) -> None:
    """Encode and decode image, video, .npy or mesh files; write reconstructions and
    side-by-sides (PNG for images and one-channel maps, MP4 and GIF for videos decoded in
    temporal tiles; .npy arrays are written back as .npy; meshes as 3DGS .ply Gaussians with
    a views | reconstruction PNG)."""
    from pathlib import Path

    from atoken.cli_files import read_input, save_reconstruction
    from atoken.viz_video import reconstruct_video_file

    try:
        model = load_tokenizer(checkpoint)
        items = [read_input(p, modality, model) for p in inputs]
    except AtokenError as exc:
        raise fail(exc) from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, (kind, sample) in zip(inputs, items, strict=True):
        try:
            if sample is None:  # a video file: tiled, streamed from the file
                r = reconstruct_video_file(model, path, out, max_frames=max_frames)
                rows.append((r["stem"], kind, "x".join(map(str, r["size"])), f"{r['psnr']:.2f} dB"))
                continue
            recon = model.reconstruct([sample], kind)[0]
        except AtokenError as exc:
            raise fail(exc) from exc
        saved = save_reconstruction(path, kind, sample, recon, out, model)
        rows.append((Path(path).stem, kind, *saved))
    table(("input", "modality", "size", "error"), rows)
    click.echo(f"wrote {len(rows)} reconstructions to {out}")


@main.command(name="eval")
@click.option("--checkpoint", required=True, help="A saved tokenizer or a run folder.")
@click.option(
    "--data",
    default="photos",
    show_default=True,
    help="'photos' (the held-out bundled photos), 'digits' (held-out captioned digits) or a "
    "folder of images.",
)
@click.option(
    "--metrics",
    default=None,
    help="Image metrics [default: psnr,ssim,fd_effnet; psnr,ssim for digits]. With captioned "
    "data and a text-aligned tokenizer, zeroshot and retrieval are added.",
)
@click.option("--digit-classes", default="", help="Digits to evaluate, e.g. '0,1,2' (default all).")
@click.option(
    "--digit-size",
    type=click.IntRange(min=8),
    default=64,
    show_default=True,
    help='Digits: the run\'s digits source size (data = { source = "digits", size = ... }).',
)
@click.option(
    "--digit-seed",
    type=int,
    default=0,
    show_default=True,
    help="Digits: the run's [run] seed, which chose its held-out split (another seed would "
    "evaluate on training images).",
)
@click.option(
    "--heldout-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Digits: the run's digits source heldout_fraction.",
)
def eval_command(
    checkpoint: str,
    data: str,
    metrics: str | None,
    digit_classes: str,
    digit_size: int,
    digit_seed: int,
    heldout_fraction: float,
) -> None:
    """Reconstruct a held-out set and report metrics (and semantic ones when the tokenizer is
    aligned to text and the data has captions)."""
    from atoken.data import HELDOUT_PHOTOS, ImageFolder, PhotoSet
    from atoken.tasks import evaluate_samples
    from atoken.tasks.alignment import evaluate_semantic, heldout_digits

    try:
        model = load_tokenizer(checkpoint)
        captioned = (
            heldout_digits(
                digit_classes,
                size=digit_size,
                seed=digit_seed,
                heldout_fraction=heldout_fraction,
            )
            if data == "digits"
            else None
        )
        if captioned is not None:
            images = list(captioned.images.unbind(0))
        else:
            source = PhotoSet(HELDOUT_PHOTOS) if data == "photos" else ImageFolder(data)
            images = [source[i].float() / 255 for i in range(len(source))]
        default = "psnr,ssim" if captioned is not None else "psnr,ssim,fd_effnet"
        registry = get_registry()
        chosen = {m: registry.metrics.create(m) for m in (metrics or default).split(",") if m}
        semantic = {k: v for k, v in chosen.items() if getattr(v, "inputs", "") == "embeddings"}
        chosen = {k: v for k, v in chosen.items() if k not in semantic}
        if captioned is not None and model.semantic is not None and not semantic:
            semantic = {m: registry.metrics.create(m) for m in ("zeroshot", "retrieval")}
        recon = [y.clamp(0, 1) for y in model.reconstruct(images)] if chosen else []
        values = evaluate_samples(chosen, recon, images) if chosen else {}
        if semantic and captioned is not None:
            values.update(evaluate_semantic(model, captioned, semantic))
    except AtokenError as exc:
        raise fail(exc) from exc
    table(("metric", "value"), [(k, f"{v:.4f}") for k, v in values.items()])


main.add_command(data)
main.add_command(encode)
main.add_command(classify)
main.add_command(report)
main.add_command(convert)
main.add_command(checkpoint)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
