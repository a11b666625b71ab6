"""The layering contract (our import-linter: import-linter cannot follow the package-dir map).

* ``atoken.core`` imports nothing of atoken above it, nor zarr, fsspec or scipy (#31: the
  engine is ``atoken.engine``, storage ``atoken.data``);
* ``atoken.losses`` imports ``atoken.core``, the hook markers (``atoken.plugins.hookspecs``)
  and its own folder only;
* a modality family (``atoken.modalities.<family>``: the modality, its file IO, data sources,
  task, metrics, tiling, pictures) imports ``atoken.core``, the hook markers, the contracts
  in :data:`CONTRACTS` (data layer, task base, metric base, loss helpers) and itself; never
  the facade, the CLI, the engine or another family; and no contract imports a family;
* the kernel folders (core, losses, plugins) import no folder above them, and no module
  imports itself back (no import cycle; imports inside functions count: they are
  dependencies too);
* no private reach across modules (#30): a private name (``_name``) is private to the module
  that defines it, a private module (``_base.py``) to the package it sits in. So a module may
  not import ``_name`` from another module (``from atoken.cli_common import _fail``), nor a
  private module of another package (``atoken.plugins.text_encoders._base`` from
  ``atoken.losses``); siblings in one package may import their private module
  (``plugins/text_encoders/*.py`` -> ``plugins/text_encoders/_base.py``) but not the private
  names in it. Nor may it read
  ``obj._name`` (or ``getattr(obj, "_name")``) unless ``obj`` is ``self``, ``cls`` or
  ``super()``, or ``_name`` is one this module defines (a function or class, an assignment,
  ``self._name = ...``): a helper beside its class in one module may touch the class's
  insides. What another module needs becomes public API of its owner. Library privates count
  too (the AST cannot tell whose ``obj`` is): the few we need are in :data:`PRIVATE_ALLOWED`,
  each with its reason.

  Scanned: the five folders above (``atoken/testing`` included: it is public API, shipped to
  plugin authors), ``benchmarks/`` and the example plugins in ``docs/examples/`` (both use
  atoken from outside, as users do). Not scanned: ``tests/``. A test is the companion of the
  module it tests (``tests/`` mirrors the packages): it may call that module's private
  helpers and patch its private seams (``monkeypatch.setattr(mod, "_helper", ...)``), which is
  white-box testing, not a dependency of the library.
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
#: What a modality family builds on besides the core (module or package prefixes).
CONTRACTS = (
    HOOK_MARKERS,
    "atoken.data",
    "atoken.tasks.base",
    "atoken.tasks.planning",
    "atoken.plugins.manager",
    "atoken.plugins.command_kit",
    "atoken.plugins.metrics.base",
    "atoken.plugins.metrics.frechet",
    "atoken.plugins.metrics.pixel",
    "atoken.losses.image_batch",
    "atoken.losses.weight_files",
    "atoken.viz",
)
#: Families: packages (or, for now, modules) directly under ``modalities/``.
FAMILY_ROOT = "atoken.modalities"

#: Libraries the model kernel never imports: storage (zarr, fsspec), numerics of the data
#: and metrics layers (scipy), and the engine's distributed checkpoints.
CORE_FORBIDDEN = ("zarr", "fsspec", "scipy", "numcodecs", "torch.distributed.checkpoint")


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


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def family_of(module: str) -> str | None:
    """``atoken.modalities.video`` for any module of the video family, else None."""
    if not module.startswith(FAMILY_ROOT + "."):
        return None
    return ".".join(module.split(".")[:3])


def test_losses_import_core_and_the_hook_markers_only():
    bad = sorted(
        f"{m} -> {i}"
        for m, deps in GRAPH.items()
        if folder_of(m) == "atoken.losses"
        for i in deps
        if folder_of(i) not in ("atoken.core", "atoken.losses") and i != HOOK_MARKERS
    )
    assert not bad, bad


def test_a_family_imports_the_core_the_contracts_and_itself_only():
    bad = sorted(
        f"{m} -> {i}"
        for m, deps in GRAPH.items()
        if family_of(m) is not None
        for i in deps
        if not (
            _within(i, "atoken.core")
            or family_of(i) == family_of(m)
            or i == FAMILY_ROOT
            or any(_within(i, c) for c in CONTRACTS)
        )
    )
    assert not bad, bad
    families = {family_of(m) for m in GRAPH} - {None}
    assert {"atoken.modalities.video", "atoken.modalities.mesh"} <= families


def test_the_command_line_imports_no_family():
    """A family's commands, files and stores reach ``atoken`` through hooks
    (``register_commands``; ``Modality.streams``/``reconstruct_stream``/``open_store``...),
    so ``atoken.cli`` works the same for a third party's family as for a built-in one."""
    bad = sorted(
        f"{m} -> {i}"
        for m, deps in GRAPH.items()
        if _within(m, "atoken.cli")
        for i in deps
        if family_of(i) is not None
    )
    assert not bad, bad
    assert any(_within(m, "atoken.cli") for m in GRAPH)


def test_no_contract_imports_a_family():
    bad = sorted(
        f"{m} -> {i}"
        for m, deps in GRAPH.items()
        if any(_within(m, c) for c in CONTRACTS)
        for i in deps
        if family_of(i) is not None
    )
    assert not bad, bad


def test_the_kernel_folders_import_no_folder_above_them():
    """core <- losses <- plugins: the folders below the application and the families."""
    below = {"atoken.core": set(), "atoken.losses": {"atoken.core"}}
    below["atoken.plugins"] = {"atoken.core", "atoken.losses"}
    bad = sorted(
        f"{m} -> {i}"
        for m, deps in GRAPH.items()
        if folder_of(m) in below and not any(_within(m, c) for c in CONTRACTS)
        for i in deps
        if i != HOOK_MARKERS
        and folder_of(i) != folder_of(m)
        and folder_of(i) not in below[folder_of(m)]
    )
    assert not bad, bad


def test_no_cycle_between_modules():
    assert not _cycles(GRAPH), _cycles(GRAPH)


def _libraries(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute imports, anywhere in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_core_is_the_model_kernel_without_storage_or_the_engine():
    """#31: the engine (atoken.engine) and zarr storage (atoken.data) left core; core imports
    neither them (test_core_imports_nothing_above_it) nor their libraries."""
    bad = sorted(
        f"{m} -> {name}"
        for m, path in MODULES.items()
        if folder_of(m) == "atoken.core"
        for name in _libraries(path)
        if any(name == lib or name.startswith(lib + ".") for lib in CORE_FORBIDDEN)
    )
    assert not bad, bad
    engine = [m for m in MODULES if m.startswith("atoken.engine.")]
    assert "atoken.engine.trainer" in engine and "atoken.data.latent_store" in MODULES


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


# ------------------------------------------------------------------ no private reach (#30)
#: Private names of libraries we reach on purpose, each with why. Keys: an import's qualified
#: name, or an attribute's bare name (the AST does not know whose the object is).
PRIVATE_ALLOWED = {
    "open_clip.model._build_text_tower": (
        "open_clip builds a text tower alone only with it; its public CustomTextCLIP also builds "
        "the ~400M-parameter vision tower that open_clip_text exists to avoid"
    ),
    "torch.distributed.checkpoint.filesystem._StorageInfo": (
        "DCP's FileSystemReader reads storage_data as these records and has no public type for "
        "them; dcp_format rebuilds them from its JSON index"
    ),
}
#: TEMPORARY, issue #30 empties it: reaches in files being rewritten under #30 (the tokenizer
#: and its tiles, the CLI), keyed (module, name) with names as in PRIVATE_ALLOWED. Whoever
#: removes a reach removes its entry here (no test forces it while the rewrite is under way).
_REFLECTION = {"getattr", "hasattr", "setattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _outside_modules() -> dict[str, Path]:
    """``benchmarks/`` (scripts: top-level modules) and the example plugins' packages."""
    out = {path.stem: path for path in sorted((ROOT / "benchmarks").glob("*.py"))}
    for dist in sorted((ROOT / "docs" / "examples").iterdir()):
        for path in sorted(dist.glob("*/**/*.py")):
            if ".egg-info" in str(path):
                continue
            parts = list(path.relative_to(dist).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _may_import(importer: str, package: str, target: str) -> bool:
    """Whether ``importer`` (in ``package``) may import the module ``target``: each private
    module on its path is open to its own package (siblings) and to what lies inside it."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            owner, inside = ".".join(parts[:i]), ".".join(parts[: i + 1])
            if package != owner and not (importer + ".").startswith(inside + "."):
                return False
    return True


def _inside(obj: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: an object whose private parts are this class's own."""
    if isinstance(obj, ast.Name):
        return obj.id in ("self", "cls")
    return isinstance(obj, ast.Call) and isinstance(obj.func, ast.Name) and obj.func.id == "super"


def _own_privates(tree: ast.AST) -> set[str]:
    """The private names a module defines: defs, classes, assignments, ``self._x = ...``
    (``super()._x = ...`` cannot happen)."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.update([node.attr] if _inside(node.value) else [])
    return {name for name in own if _private(name)}


def _attribute_reached(node: ast.AST) -> str | None:
    """The private attribute ``node`` reads or writes on another object: ``obj._x``, or
    ``getattr(obj, "_x")`` and the other reflection built-ins."""
    if isinstance(node, ast.Attribute):
        obj, name = node.value, node.attr
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _REFLECTION
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        obj, name = node.args[0], node.args[1].value
    else:
        return None
    return name if _private(name) and not _inside(obj) else None


def private_reaches(module: str, source: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, name)`` of every private reach of ``module`` into another module (the rule in
    this file's docstring); ``name`` is an import's qualified name or an attribute's name."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    own = _own_privates(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            found += [(node.lineno, n) for n in names if not _may_import(module, package, n)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # a module: the package rule
                    ok = _may_import(module, package, sub)
                else:  # a name (or a library's module): private names stay in their module
                    ok = _may_import(module, package, target) and not _private(alias.name)
                if not ok:
                    found.append((node.lineno, sub))
        elif (name := _attribute_reached(node)) and name not in own:
            found.append((node.lineno, name))
    return sorted(found)


def _all_reaches() -> list[tuple[str, Path, int, str]]:
    out = []
    for module, path in sorted({**MODULES, **_outside_modules()}.items()):
        source = path.read_text("utf-8")
        is_package = path.name == "__init__.py"
        for line, name in private_reaches(module, source, is_package=is_package):
            out.append((module, path, line, name))
    return out


REACHES = _all_reaches()


def test_no_private_reach_across_modules():
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module} reaches {name}"
        for module, path, line, name in REACHES
        if name not in PRIVATE_ALLOWED
    ]
    assert not bad, "\n".join(bad)


def test_the_allowed_library_privates_are_still_used():
    """A stale entry would let a new reach of the same name in."""
    unused = set(PRIVATE_ALLOWED) - {name for *_, name in REACHES}
    assert not unused, sorted(unused)


def test_the_private_reach_check_finds_reaches():
    source = """
from atoken.modalities.mesh._cpu_kernels import bin_tiles  # another package's private module
from atoken.cli_common import _fail              # another module's private name
from atoken.plugins.text_encoders import _base   # a sibling private module: allowed
from . import _base as base                      # the same, relative: allowed
from atoken.plugins.text_encoders._base import _x  # a sibling's private name
import atoken._tiles                             # another package's private module
from torch import _C                             # a library's private name
tok._device()
getattr(tok, "_names")
self._a, cls._b, super()._c, tok.__dict__, getattr(self, "_d")  # allowed
class Lock:
    def __init__(self):
        self._fd = None
def release(lock):
    return lock._fd                              # this module's own private name: allowed
"""
    found = private_reaches("atoken.plugins.text_encoders.minilm", source)
    assert [name for _, name in found] == [
        "atoken.modalities.mesh._cpu_kernels.bin_tiles",
        "atoken.cli_common._fail",
        "atoken.plugins.text_encoders._base._x",
        "atoken._tiles",
        "torch._C",
        "_device",
        "_names",
    ]
    package = "atoken.plugins.text_encoders"
    assert private_reaches(package, "from . import _base", is_package=True) == []
