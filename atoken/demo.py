"""``make demo``: the smallest real end-to-end that exists today.

Lists the installed plugins, turns real photos shipped by scikit-image (of different sizes,
grayscale and RGBA among them) into one packed SparseLatent with the ``image`` modality,
unpacks and decodes them back, checks that the round trip is exact, and writes a picture of
the token grids to ``runs/demo/token_grid.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import atoken
from atoken.cli import plugins_report
from atoken.modalities.image import to_image_tensor

__all__ = ["main", "photos"]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "logo")


def photos() -> dict[str, np.ndarray]:
    """Real photos bundled with scikit-image (no download), by name."""
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in PHOTOS}


def _grid_picture(images: list[torch.Tensor], patch: int, path: Path) -> None:
    height = 160
    tiles = []
    for x in images:
        pil = Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        scale = height / pil.height
        pil = pil.resize((max(1, round(pil.width * scale)), height))
        grid = pil.copy()
        draw = ImageDraw.Draw(grid)
        step = patch * scale
        for i in range(1, int(pil.width / step) + 1):
            draw.line([(i * step, 0), (i * step, height)], fill=(255, 255, 0), width=1)
        for j in range(1, int(height / step) + 1):
            draw.line([(0, j * step), (pil.width, j * step)], fill=(255, 255, 0), width=1)
        tiles.append(Image.blend(pil, grid, 0.3))  # faint grid: the photo stays readable
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) + 1), height + 16))
    x0 = 8
    for t in tiles:
        canvas.paste(t, (x0, 8))
        x0 += t.width + 8
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output folder")
    args = parser.parse_args(argv)

    report = plugins_report()
    print("Plugins:")
    for p in report["plugins"]:
        print(f"  {p['name']:<28} {p['distribution']} {p['version']}")
    for kind, comps in report["components"].items():
        print(f"  {kind:<20} {', '.join(c['name'] for c in comps) or '-'}")

    modality = atoken.get_registry().modalities.create("image")
    raw = photos()
    start = time.perf_counter()
    latent = modality.pack(list(raw.values()))
    decoded = modality.unpack(latent)
    elapsed = time.perf_counter() - start
    print(f"\nPacked {latent.batch_size} real photos into {latent!r}")
    print(f"{'photo':<12}{'input':>16}{'grid (t,h,w)':>16}{'tokens':>8}{'max |err|':>11}")
    worst = 0.0
    for (name, array), restored, part in zip(raw.items(), decoded, latent.unpack(), strict=True):
        err = float((restored - to_image_tensor(array)).abs().max())
        worst = max(worst, err)
        shape = "x".join(str(s) for s in array.shape)
        grid = tuple(part.meta[0]["grid"])
        print(f"{name:<12}{shape:>16}{grid!s:>16}{part.num_tokens:>8}{err:>11.1e}")
    print(
        f"pack + unpack of {latent.num_tokens} tokens took {elapsed * 1e3:.1f} ms; "
        f"round trip {'EXACT' if worst == 0 else 'NOT exact'}"
    )
    out = Path(args.out) / "token_grid.png"
    _grid_picture(decoded, modality.patch_size, out)
    print(f"wrote {out}")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
