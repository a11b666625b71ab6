"""The README's Python example runs as written, on photo files, and does what its comments say."""

from __future__ import annotations

import torch
from PIL import Image

from atoken.data.images import load_photo
from tests.doc_pages import ROOT, code_blocks

README = ROOT / "README.md"


def test_the_readme_example_runs_and_keeps_its_promises(tmp_path, monkeypatch):
    (block,) = [body for language, body in code_blocks(README) if language == "python"]
    sizes = {"photo.jpg": (96, 128), "cat.png": (64, 80)}  # (H, W), neither a square
    for (file, (h, w)), name in zip(sizes.items(), ["astronaut", "coffee"], strict=True):
        array = load_photo(name)[:, :h, :w].permute(1, 2, 0).numpy()  # [3, H, W] -> [H, W, 3]
        Image.fromarray(array).save(tmp_path / file)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)

    latent, images, emb = scope["latent"], scope["images"], scope["emb"]
    patches = sum((h // 16) * (w // 16) for h, w in sizes.values())
    assert latent.feats.shape == (patches, 32) and latent.coords.shape == (patches, 4)
    assert [tuple(image.shape) for image in images] == [(3, h, w) for h, w in sizes.values()]
    assert emb.shape[0] == 1 and emb.ndim == 2
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
