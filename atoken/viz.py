"""Pictures: side-by-side reconstructions (original | reconstruction), one row per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from atoken.core.sample_files import visible

__all__ = ["save_side_by_side", "to_pil", "to_visible"]


def to_pil(x: torch.Tensor) -> Image.Image:
    """float ``[3, H, W]`` in [0, 1] -> an RGB PIL image."""
    array = (x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
    return Image.fromarray(array.astype(np.uint8))


def to_visible(x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor | None:
    """A sample as a picture ``[3, H, W]`` in [0, 1] (:func:`atoken.core.sample_files.visible`,
    what a modality's default ``draw`` does): ``[3, H, W]`` as it is (clamped); a one-channel
    map ``[H, W]`` or ``[1, H, W]`` scaled by the range of ``ref`` and shown grey; None for
    other layouts."""
    return visible(x, ref)


def save_side_by_side(
    originals: Sequence[torch.Tensor],
    reconstructions: Sequence[torch.Tensor],
    path: str | Path,
    *,
    labels: Sequence[str] = (),
    height: int = 256,
    columns: Sequence[str] = ("original", "reconstruction"),
    extra: Sequence[Sequence[torch.Tensor]] = (),
) -> Path:
    """Write a PNG with one row per image: the original, its reconstruction, and any ``extra``
    columns (e.g. a baseline), each scaled to ``height`` pixels, labelled on top."""
    rows = [
        [o, r, *(e[i] for e in extra)]
        for i, (o, r) in enumerate(zip(originals, reconstructions, strict=True))
    ]
    pad, label_h = 6, 16
    scaled = []
    for row in rows:
        pics = []
        for x in row:
            pil = to_pil(x)
            w = max(1, round(pil.width * height / pil.height))
            pics.append(pil.resize((w, height), Image.Resampling.BICUBIC))
        scaled.append(pics)
    width = max(sum(p.width for p in pics) + pad * (len(pics) + 1) for pics in scaled)
    canvas = Image.new("RGB", (width, len(rows) * (height + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for i, pics in enumerate(scaled):
        x = pad
        for j, pic in enumerate(pics):
            name = columns[j] if j < len(columns) else f"column {j}"
            caption = f"{labels[i]}: {name}" if j == 0 and i < len(labels) else name
            draw.text((x, y), caption, fill="black")
            canvas.paste(pic, (x, y + label_h))
            x += pic.width + pad
        y += height + label_h + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
