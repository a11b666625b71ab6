"""``atoken reconstruct``: encode and decode files of any modality with a saved tokenizer
(the files it reads and writes: :mod:`atoken.cli.files`)."""

from __future__ import annotations

from pathlib import Path

import click

from atoken.cli.common import fail, load_tokenizer, table
from atoken.core.errors import AtokenError

__all__ = ["reconstruct"]


@click.command()
@click.option("--checkpoint", required=True, help="A saved tokenizer or a run folder.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Videos: reconstruct only the first N frames (the written clips hold every frame in "
    "memory; the tiled Python API, atoken.modalities.video.tiling.iter_reconstruct, streams).",
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
    """Encode and decode image, video, .npy or mesh files (or folders of a 3D asset's views in
    the official layout); write reconstructions and side-by-sides (PNG for images and
    one-channel maps, MP4 and GIF for videos decoded in temporal tiles; .npy arrays are written
    back as .npy; meshes as 3DGS .ply Gaussians with a views | reconstruction PNG)."""
    from atoken.cli.files import read_input, save_reconstruction

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
            if sample is None:  # streamed by its modality (a video file: temporal tiles)
                reader = model.modality(kind)
                saved = reader.reconstruct_stream(model, path, out, max_frames=max_frames)
            else:
                recon = model.reconstruct([sample], kind)[0]
                saved = save_reconstruction(path, kind, sample, recon, out, model)
        except AtokenError as exc:
            raise fail(exc) from exc
        rows.append((Path(path).stem, kind, *saved))
    table(("input", "modality", "size", "quality"), rows)
    click.echo(f"wrote {len(rows)} reconstructions to {out}")
