"""Every import path the docs give still imports (#31: the rooms moved, the docs' paths hold).

Scanned: README.md and docs/**/*.md, code blocks and inline code alike: ``from atoken... import
a, b`` and ``import atoken...`` statements, and dotted names ``atoken.x.y.Name`` in backticks.
All are checked in one fresh interpreter (old paths resolve through :mod:`atoken.moved`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.doc_pages import DOCS

FROM = re.compile(r"^\s*(?:>>>\s*)?from (atoken[\w.]*) import ([\w, ()]+?)\s*(?:#.*)?$", re.M)
IMPORT = re.compile(r"^\s*(?:>>>\s*)?import (atoken[\w.]*)(?: as \w+)?\s*(?:#.*)?$", re.M)
DOTTED = re.compile(r"`(atoken(?:\.\w+)+)(?:\(|`)")
#: Dotted names in the docs that are not import paths: the zarr stores' schema names.
NOT_PATHS = {"atoken.latents", "atoken.media"}

CHECK = """
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
bad = []
for kind, path, names in json.loads(sys.stdin.read()):
    try:
        if kind == "from":
            module = importlib.import_module(path)
            for name in names:
                if not hasattr(module, name):
                    importlib.import_module(f"{path}.{name}")
        else:
            parts = path.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                    break
                except ModuleNotFoundError:
                    continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
    except Exception as exc:
        bad.append([kind, path, names, f"{type(exc).__name__}: {exc}"])
print(json.dumps(bad))
"""


def doc_imports() -> list[tuple[str, str, list[str]]]:
    """``(kind, path, names)`` of every atoken import and dotted name the docs give."""
    found = set()
    for doc in DOCS:
        text = doc.read_text("utf-8")
        for module, names in FROM.findall(text):
            names = tuple(n.strip() for n in names.strip("()").split(",") if n.strip())
            found.add(("from", module, names))
        for module in IMPORT.findall(text):
            found.add(("name", module, ()))
        for dotted in DOTTED.findall(text):
            if dotted not in NOT_PATHS:
                found.add(("name", dotted, ()))
    return sorted((k, p, list(n)) for k, p, n in found)


def test_every_import_path_in_the_docs_imports():
    imports = doc_imports()
    assert len(imports) > 50  # the scan found the docs' imports
    assert ("from", "atoken.data", ["read_latents", "write_latents"]) in imports
    run = subprocess.run(
        [sys.executable, "-c", CHECK], input=json.dumps(imports), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    bad = json.loads(run.stdout.strip().splitlines()[-1])
    assert not bad, "\n".join(map(str, bad))
