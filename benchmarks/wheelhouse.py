"""The wheels atoken needs on a GPU machine that has no package registry (#29 item 4).

    make wheelhouse                                    # = the line below
    python benchmarks/wheelhouse.py --out wheelhouse [--split]

The GPU machines have Python 3.12 with torch 2.11 (CUDA 13), timm, pluggy, attrs, fsspec,
hypothesis, scikit-image and matplotlib, and a command there carries at most 64 MiB. This
gathers the rest: atoken's requirements (pyproject.toml) closed over their own (read from
the packages installed here), less the preinstalled packages and everything they require,
each a binary wheel for CPython 3.12 on manylinux x86_64 at the version installed and tested
here (``pip download --no-deps --only-binary=:all:``), plus atoken's own wheel.
``--also NAME`` adds a package the GPU machine has in a version too old for the others
(pip names it when the install there fails). It prints
every wheel, the total, and whether the total fits in 64 MiB; ``--split`` also writes the
folder as ``<out>.tar.000``, ``.001``... of at most 64 MiB each, to carry one per command.

On the GPU machine::

    cat wheelhouse.tar.* > wheelhouse.tar && tar xf wheelhouse.tar
    pip install --no-index --find-links wheelhouse atoken
    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
#: What the GPU machines have installed (with everything these require).
PREINSTALLED = (
    "torch",
    "timm",
    "pluggy",
    "attrs",
    "fsspec",
    "hypothesis",
    "scikit-image",
    "matplotlib",
)
#: The wheel tags of the GPU machines: CPython 3.12, glibc x86_64.
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
)
LIMIT = 64 * 2**20


def _environment(python: str) -> dict[str, str]:
    env = default_environment()
    env.update(
        python_version=python,
        python_full_version=f"{python}.0",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        implementation_name="cpython",
    )
    return env


def _requires(name: str, extras: set[str], env: dict[str, str]) -> list[Requirement]:
    """The requirements of installed package ``name`` (with ``extras``) on the target."""
    try:
        lines = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for line in lines:
        req = Requirement(line)
        wanted = req.marker is None or any(
            req.marker.evaluate({**env, "extra": extra}) for extra in extras or {""}
        )
        if wanted:
            out.append(req)
    return out


def closure(roots: list[Requirement], env: dict[str, str]) -> dict[str, str]:
    """Every installed distribution ``roots`` need, transitively: name -> installed version
    (distributions not installed here, e.g. for another platform, are left out)."""
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in found:
            continue
        try:
            found[key] = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
        todo.extend(_requires(req.name, set(req.extras), env))
    return found


def _ours(env: dict[str, str]) -> list[Requirement]:
    """atoken's requirements on the target, from pyproject.toml (an installed copy's metadata
    can be older than the file)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    reqs = [Requirement(line) for line in project["dependencies"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**env, "extra": ""})]


def needed(python: str) -> dict[str, str]:
    """atoken's requirements on the GPU machines less what they have: name -> version."""
    env = _environment(python)
    ours = closure(_ours(env), env)
    theirs = closure([Requirement(n) for n in PREINSTALLED], env)
    return {k: v for k, v in sorted(ours.items()) if k not in theirs}


def download(packages: dict[str, str], out: Path, python: str) -> None:
    tags = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pins = [f"{name}=={version}" for name, version in packages.items()]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
         *tags, "--dest", str(out), *pins],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(ROOT)],
        check=True,
    )  # fmt: skip


def split(out: Path) -> list[Path]:
    """``out`` as one tar file cut into pieces of at most 64 MiB: the pieces."""
    archive = out.with_name(out.name + ".tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(out, arcname=out.name)
    pieces = []
    with archive.open("rb") as f:
        while chunk := f.read(LIMIT):
            piece = archive.with_name(f"{archive.name}.{len(pieces):03d}")
            piece.write_bytes(chunk)
            pieces.append(piece)
    archive.unlink()
    return pieces


def main(argv: list[str] | None = None) -> int:
    """Gather the wheels, report their size against 64 MiB, and split them when asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="wheelhouse", type=Path)
    parser.add_argument("--python", default="3.12")
    parser.add_argument("--split", action="store_true", help="also write 64 MiB pieces")
    parser.add_argument("--list", action="store_true", help="only list what is needed")
    parser.add_argument("--also", nargs="*", default=[], help="installed packages to add")
    args = parser.parse_args(argv)
    packages = needed(args.python)
    for name in args.also:
        packages[canonicalize_name(name)] = metadata.version(name)
    if args.list:
        for name, version in packages.items():
            print(f"{name}=={version}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    download(packages, args.out, args.python)
    wheels = sorted(args.out.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
    total = sum(p.stat().st_size for p in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:8.1f} MiB  {wheel.name}")
    print(f"{total / 2**20:8.1f} MiB  in {len(wheels)} wheels in {args.out}/")
    if total > LIMIT:
        print(
            f"over the 64 MiB one command can carry, by {(total - LIMIT) / 2**20:.1f} MiB: "
            "carry it in pieces (--split) or leave out what the run does not need"
        )
    else:
        print("fits in one command (64 MiB)")
    if args.split:
        pieces = split(args.out)
        print(f"{len(pieces)} pieces of at most 64 MiB: {', '.join(p.name for p in pieces)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
