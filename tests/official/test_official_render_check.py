"""benchmarks/official_render_check.py: runs on the CPU (the official rasterizer skipped, with
the reason), and on a machine with it prints the PSNR and fails below 40 dB."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from atoken.modalities.mesh.splat import RenderOutput

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "official_render_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("official_render_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_on_the_cpu_it_renders_and_says_why_the_official_rasterizer_is_skipped(capsys):
    check = _module()
    assert check.main(["--views", "1", "--size", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("official rasterizer: ")
    assert any(line.startswith("[decoder] 384 Gaussians, 1 views of 64 px") for line in out)
    assert any(line.startswith("[blobs] 60 Gaussians") for line in out)


def test_with_the_official_rasterizer_it_prints_the_psnr_and_fails_below_40_db(monkeypatch, capsys):
    check = _module()
    monkeypatch.setattr(check, "official_renderer_missing", lambda: None)

    def same(gaussians, camera):  # a stand-in that renders as atoken does
        return check.official_render(gaussians, camera)

    monkeypatch.setattr(check, "official_rasterizer_render", same)
    assert check.main(["--views", "1", "--size", "64"]) == 0
    assert "PSNR atoken vs official inf dB" in capsys.readouterr().out

    def black(gaussians, camera):
        rgb = torch.zeros(camera.batch_size, 3, 64, 64)
        return RenderOutput(rgb=rgb, alpha=torch.zeros(camera.batch_size, 64, 64))

    monkeypatch.setattr(check, "official_rasterizer_render", black)
    assert check.main(["--views", "1", "--size", "64"]) == 1
