"""CPU inference speed at the official model's size: tokens/s of encode and decode.

    .venv/bin/python benchmarks/official_inference.py             # so400m preset, ~3-5 minutes
    .venv/bin/python benchmarks/official_inference.py --preset tiny --repeats 1   # a quick look

The ``so400m`` preset (27 + 27 blocks of 1152 wide, 16 heads, MLP 4304: the official AToken
So400m shapes) with random weights, no gradients, on a 256 px image (256 tokens) and a
16-frame 256 px clip (4 x 16 x 16 = 1024 tokens), in fp32 and under bf16 autocast. Each figure
is the best of ``--repeats`` timed runs after one warm-up; fp32 and bf16 run side by side in
this one process, so a busy machine slows both alike (the load average is printed). The bf16
rows also give how far bf16's latent and decoded values are from fp32's (mean and maximum
absolute difference; docs/official-weights.md compares them with the official model's own).

The 3D path, in the same run: the official Gaussian decoder at its released shapes (12 blocks
of 768, 12 heads, 32 Gaussians per voxel; random weights in the official checkpoint layout)
on the voxels of a sphere shell in the 64^3 grid (``--shell-radius`` voxels, 20: ~5k voxels,
a typical asset's surface), timed as its forward (voxels -> raw parameters), the activations
(-> a GaussianSet) and one 512 px render at the official renderer's settings on atoken's
``cpu`` renderer (``atoken.official.gaussian_render.official_render``), fp32. Before it, the
tokenizer's part for a mesh (a box and an off-centre sphere): rendering 16 views of 256 px,
the official packing into the 64^3 grid (``MeshModality(packing="official")``, what a
converted tokenizer uses), and one encode and one decode (to the patches) of its voxels by the
preset (timed once each: at so400m they take minutes; ``--skip-3d-tokens`` leaves them out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch

import atoken


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Print the table and a JSON line of tokens/s per case, precision and direction."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="so400m")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--shell-radius", type=float, default=20.0)
    parser.add_argument("--skip-3d-tokens", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = atoken.Tokenizer.from_preset(args.preset).eval()
    with torch.no_grad():  # zero-initialised layers (the output head) get values: decodes vary
        for p in tok.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    params = sum(p.numel() for p in tok.parameters())
    g = torch.Generator().manual_seed(0)
    cases = {
        "image 256 px": ([torch.rand(3, 256, 256, generator=g)], "image"),
        "clip 16 x 256 px": ([torch.rand(3, 16, 256, 256, generator=g)], "video"),
    }
    rows, out = [], {}
    for label, (samples, modality) in cases.items():
        fp32: tuple[torch.Tensor, torch.Tensor] | None = None
        for precision in ("fp32", "bf16"):
            ctx = (
                (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
                if precision == "bf16"
                else contextlib.nullcontext
            )
            with torch.no_grad(), ctx():
                latent = tok.encode(samples, modality)
                n = latent.num_tokens
                enc = _best(lambda: tok.encode(samples, modality), args.repeats)  # noqa: B023
                dec = _best(lambda: tok.decode(latent), args.repeats)  # noqa: B023
                values = (latent.feats.float(), tok.decode(latent)[0].float())
            out[f"{label} {precision}"] = {
                "tokens": n,
                "encode_tokens_per_s": n / enc,
                "decode_tokens_per_s": n / dec,
                "round_trip_tokens_per_s": n / (enc + dec),
            }
            drift = ""
            if fp32 is None:
                fp32 = values
            else:  # bf16 against fp32: (mean, max) |difference| of latent and decoded values
                d = [(a - b).abs() for a, b in zip(values, fp32, strict=True)]
                out[f"{label} {precision}"]["vs_fp32"] = {
                    "latent_mean": float(d[0].mean()),
                    "latent_max": float(d[0].max()),
                    "decoded_mean": float(d[1].mean()),
                    "decoded_max": float(d[1].max()),
                }
                drift = "  " + "  ".join(f"{float(x.mean()):.1e}/{float(x.max()):.1e}" for x in d)
            rows.append((label, precision, n, n / enc, n / dec, n / (enc + dec), drift))
    mesh_row, out["3d mesh"] = _mesh_path(args.preset, args.repeats, not args.skip_3d_tokens)
    gaussian_row, out["3d gaussians"] = _gaussian_path(args.shell_radius, args.repeats)
    load = os.getloadavg()[0]
    print(f"{args.preset}: {params / 1e6:.0f} M parameters, random weights, {args.threads} "
          f"threads, load average {load:.2f}")  # fmt: skip
    print(f"{'case':18s} {'prec':5s} {'tokens':>6s} {'encode/s':>9s} {'decode/s':>9s} "
          f"{'both/s':>8s}  vs fp32: latent, decoded (mean/max)")  # fmt: skip
    for label, precision, n, e, d, b, drift in rows:
        print(f"{label:18s} {precision:5s} {n:6d} {e:9.1f} {d:9.1f} {b:8.1f}{drift}")
    print(mesh_row)
    print(gaussian_row)
    print(json.dumps({"preset": args.preset, "load_average": load, "results": out}))


def _mesh() -> object:
    """A box and an off-centre sphere with random face colours, in one trimesh."""
    import numpy as np
    import trimesh

    box = trimesh.creation.box(extents=(0.8, 0.5, 0.6))
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    ball.apply_translation((0.35, 0.2, 0.1))
    mesh = trimesh.util.concatenate([box, ball])
    colours = np.random.default_rng(0).integers(0, 256, (len(mesh.faces), 4), dtype=np.uint8)
    colours[:, 3] = 255
    mesh.visual.face_colors = colours
    return mesh


def _mesh_path(preset: str, repeats: int, tokens: bool) -> tuple[str, dict[str, float]]:
    """Time rendering and the official packing of a mesh (16 views of 256 px, 64^3), then one
    encode and one decode of its voxels by ``preset`` (fp32, the mesh decoded to patches)."""
    from atoken.modalities.mesh.modality import MeshModality

    mod = MeshModality(packing="official")
    mesh = _mesh()
    with torch.no_grad():
        views, _ = mod.render(mesh)
        render = _best(lambda: mod.render(mesh), repeats)
        voxels = mod.pack_views(views)
        pack = _best(lambda: mod.pack_views(views), repeats)
    n = len(voxels)
    entry = {"voxels": n, "render_16_views_s": render, "official_packing_s": pack}
    row = (
        f"3D: a mesh rendered from 16 views of 256 px in {render:.2f} s, packed by the official "
        f"rule into {n} voxels of the 64^3 grid in {pack:.2f} s"
    )
    if tokens:
        params = {"mesh": {"packing": "official"}}
        tok = atoken.Tokenizer.from_preset(
            preset, modalities=["image", "mesh"], modality_params=params, heads={"mesh": "pixels"}
        )
        with torch.no_grad():
            start = time.perf_counter()
            latent = tok.encode([voxels], "mesh")
            encode = time.perf_counter() - start
            start = time.perf_counter()
            tok.decode(latent)
            decode = time.perf_counter() - start
        entry.update(encode_s=encode, decode_s=decode, tokens_per_s=n / (encode + decode))
        row += (
            f"; {preset} encode {encode:.1f} s ({n / encode:.1f} tokens/s), decode {decode:.1f} s "
            f"({n / decode:.1f} tokens/s), once each"
        )
    return row, entry


def _gaussian_path(shell_radius: float, repeats: int) -> tuple[str, dict[str, float]]:
    """Time the official Gaussian decoder's forward, its activations and one 512 px render
    on the voxels of a sphere shell; returns the printed line and the JSON entry."""
    from atoken.official import load_gaussian_decoder
    from atoken.official.gaussian_render import official_cameras, official_render
    from atoken.testing.official import official_gaussian_decoder_state_dict

    state = official_gaussian_decoder_state_dict(width=768, depth=12, mlp=3072, seed=0)
    dec = load_gaussian_decoder(state, {"num_heads": 12})
    grid = torch.stack(torch.meshgrid(*[torch.arange(64)] * 3, indexing="ij"), -1)  # [64^3, 3]
    dist = ((grid.float() - 31.5) ** 2).sum(-1).sqrt()  # [64, 64, 64]
    xyz = grid[(dist - shell_radius).abs() < 0.5]  # [N, 3]: the shell's voxels
    n = xyz.shape[0]
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.long), xyz], 1).int()  # [N, 4]
    feats = torch.rand(n, 768, generator=torch.Generator().manual_seed(1)) * 2 - 1  # [N, 768]
    camera = official_cameras(1)
    with torch.no_grad():
        raw = dec(feats, coords)  # [N, 448]
        (gaussians,) = dec.to_gaussians(raw, coords)
        forward = _best(lambda: dec(feats, coords), repeats)
        activate = _best(lambda: dec.to_gaussians(raw, coords), repeats)
        render = _best(lambda: official_render(gaussians, camera), repeats)
    total = forward + activate + render
    entry = {
        "voxels": n,
        "gaussians": len(gaussians),
        "forward_s": forward,
        "activations_s": activate,
        "render_512px_s": render,
        "voxels_per_s": n / total,
    }
    row = (
        f"3D: official Gaussian decoder (768 x 12, random weights), {n} voxels -> "
        f"{len(gaussians)} Gaussians: forward {forward:.2f} s ({n / forward:.0f} voxels/s), "
        f"activations {activate:.3f} s, one 512 px render {render:.2f} s; all {total:.2f} s "
        f"({n / total:.0f} voxels/s)"
    )
    return row, entry


if __name__ == "__main__":
    main()
