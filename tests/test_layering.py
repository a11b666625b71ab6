"""The layering contract (our import-linter: import-linter cannot follow the package-dir map).

* ``atoken.core`` imports nothing of atoken above it;
* ``atoken.modalities`` and ``atoken.losses`` import ``atoken.core``, the hook markers
  (``atoken.plugins.hookspecs``) and their own folder only;
* no import cycle between folders, and none between modules (imports inside functions count:
  they are dependencies too), except the documented exception below.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: folder on disk -> installed package (pyproject's package-dir map)
FOLDERS = {
    "core": "atoken.core",
    "plugins": "atoken.plugins",
    "modalities": "atoken.modalities",
    "losses": "atoken.losses",
    "atoken": "atoken",
}
HOOK_MARKERS = "atoken.plugins.hookspecs"
#: Module cycles that are known and why (each one a pair of modules).
ALLOWED_CYCLES = {
    # SparseLatent.to_zarr/from_zarr delegate to the store, which builds SparseLatents; the
    # storage methods leave core/ with the data layer (docs: DESIGN target layout).
    # The same delegation for writing (to_zarr -> latent_writer, which reads latent_store's
    # layout constants and resumes through its reader).
    frozenset({"atoken.core.latent", "atoken.core.latent_store", "atoken.core.latent_writer"}),
}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path) -> set[str]:
    """The atoken modules ``module`` imports (anywhere in the file)."""
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    resolved = {_resolve(name) for name in found if name.startswith("atoken")}
    return {r for r in resolved if r and r != module}


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def folder_of(module: str) -> str:
    for package in FOLDERS.values():
        if package != "atoken" and (module == package or module.startswith(package + ".")):
            return package
    return "atoken"


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative enough here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_not_empty():
    assert "atoken.tokenizer" in GRAPH and "atoken.core.latent" in GRAPH["atoken.tokenizer"]
    assert HOOK_MARKERS in GRAPH["atoken.modalities.image"]


def test_core_imports_nothing_above_it():
    bad = sorted(
        f"{m} -> {i}"
        for m, deps in GRAPH.items()
        if folder_of(m) == "atoken.core"
        for i in deps
        if folder_of(i) != "atoken.core"
    )
    assert not bad, bad


def test_modalities_and_losses_import_core_and_the_hook_markers_only():
    bad = sorted(
        f"{m} -> {i}"
        for m, deps in GRAPH.items()
        if folder_of(m) in ("atoken.modalities", "atoken.losses")
        for i in deps
        if folder_of(i) not in ("atoken.core", folder_of(m)) and i != HOOK_MARKERS
    )
    assert not bad, bad


def test_no_cycle_between_folders():
    folders: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        for i in deps:
            if i == HOOK_MARKERS:
                continue  # the markers are the one thing every layer may import
            if folder_of(m) != folder_of(i):
                folders.setdefault(folder_of(m), set()).add(folder_of(i))
    assert not _cycles(folders), _cycles(folders)


def test_no_cycle_between_modules():
    found = [c for c in _cycles(GRAPH) if frozenset(c) not in ALLOWED_CYCLES]
    assert not found, found


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
