"""benchmarks/gpu_check.py: on the CPU every part says "no CUDA device" and the script exits 0;
a part that fails does not hide the others (#29 item 4)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_on_a_machine_without_cuda_every_part_says_so():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no device even on a GPU machine
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for part in ("attention", "training", "fsdp2", "gsplat"):
        assert f"[{part}] no CUDA device (skipped)" in lines, done.stdout
    assert "device none" in lines[0]


def test_a_failing_part_does_not_hide_the_others(monkeypatch, capsys):
    check = _module()
    ran = []

    def broken(env, args):
        raise RuntimeError("kernel image not found")

    monkeypatch.setattr(check.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(check.torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(
        check,
        "CHECKS",
        {
            "attention": broken,
            "training": lambda env, args: ran.append("training"),
            "fsdp2": broken,
            "gsplat": lambda env, args: ran.append("gsplat"),
        },
    )
    assert check.main([]) == 1  # a part failed
    out = capsys.readouterr().out
    assert ran == ["training", "gsplat"]
    assert "[attention] FAILED: RuntimeError: kernel image not found" in out
    assert "[fsdp2] FAILED" in out
    assert check.main(["--only", "training"]) == 0


def test_the_peak_of_a_known_gpu_and_an_explicit_one(monkeypatch):
    check = _module()
    monkeypatch.setattr(check.torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    assert check.peak_tflops(None) == 989.4
    monkeypatch.setattr(check.torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 PCIe")
    assert check.peak_tflops(None) == 756.0
    monkeypatch.setattr(check.torch.cuda, "get_device_name", lambda *a: "Some New GPU")
    assert check.peak_tflops(None) is None and check.peak_tflops(500.0) == 500.0


def test_every_part_runs_its_code_on_the_cpu_at_toy_sizes():
    """--cpu-smoke: the parts' code paths (SDPA against math, AdamW steps under autocast with
    the plan's FLOPs, FSDP2 on a gloo group of one) run, so the GPU day finds no typo."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "[attention] sdpa vs math" in out and "[training] tiny" in out
    assert "parameters DTensor" in out  # the FSDP2 model's parameters are sharded DTensors
    assert "FAILED" not in out


def _wheelhouse():
    spec = importlib.util.spec_from_file_location(
        "wheelhouse", ROOT / "benchmarks" / "wheelhouse.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_wheelhouse_holds_what_the_gpu_machines_lack():
    """atoken's requirements closed over theirs, less the preinstalled ones and their own."""
    needed = _wheelhouse().needed("3.12")
    for name in ("kornia", "zarr", "open-clip-torch", "lpips", "numba", "webdataset"):
        assert name in needed, name
    for name in ("torch", "timm", "torchvision", "numpy", "pillow", "scipy", "attrs", "fsspec"):
        assert name not in needed, name  # preinstalled, or required by what is
    assert all(version[0].isdigit() for version in needed.values())  # pinned to what is here


def test_the_wheelhouse_pieces_fit_a_command_and_join_back(tmp_path, monkeypatch):
    import tarfile

    wheelhouse = _wheelhouse()
    monkeypatch.setattr(wheelhouse, "LIMIT", 1000)
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    (folder / "a-1-py3-none-any.whl").write_bytes(os.urandom(2500))
    pieces = wheelhouse.split(folder)
    assert len(pieces) >= 3 and all(p.stat().st_size <= 1000 for p in pieces)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(joined) as tar:
        member = tar.extractfile("wheelhouse/a-1-py3-none-any.whl")
        assert member.read() == (folder / "a-1-py3-none-any.whl").read_bytes()
