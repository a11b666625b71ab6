"""Every run file the docs give parses, and every component it names is registered.

Scanned: README.md and docs/**/*.md, the ``toml`` blocks that hold a section (``[model]``,
``[[tasks]]``...) and are not ``pyproject.toml`` excerpts. TOML 1.0, as ``atoken train``
reads it: an inline table stays on one line. A block that is a whole run file (it has
``[[tasks]]`` or ``[[stages]]``) goes through :func:`atoken.engine.runconfig.load_run_file`; a
block of sections alone is checked the same way with one task added. Then every name it gives
must be registered: tasks, data sources, losses, metrics and stage transforms (plugins count
when installed, as for a user), and the ``[model]`` must build, shape-only on the meta device
as ``atoken train --plan`` builds it (its modalities, bottleneck, heads, text encoder). The
data itself (paths, buckets) is not read, nor a checkpoint that ``init_from`` names.
"""

from __future__ import annotations

import re

import pytest
import torch

from atoken.engine.plan import meta_tokenizer
from atoken.engine.runconfig import RunConfig, load_run_file
from atoken.plugins.manager import get_registry
from tests.doc_pages import DOCS, code_blocks, page_name

SECTION = re.compile(r"^\s*\[", re.M)
#: A ``pyproject.toml`` excerpt (a plugin's entry points) is not a run file.
PYPROJECT = re.compile(r"^\[(project|build-system|tool)\b", re.M)
ONE_TASK = '\n[[tasks]]\nname = "image_reconstruction"\n'


def _blocks() -> list[tuple[str, str]]:
    return [
        (f"{page_name(doc)} block {i}", block)
        for doc in DOCS
        for i, block in enumerate(b for language, b in code_blocks(doc) if language == "toml")
        if SECTION.search(block) and not PYPROJECT.search(block)
    ]


BLOCKS = _blocks()


def _names(cfg: RunConfig) -> list[tuple[str, str]]:
    """``(registry attribute, name)`` for every component the run file names."""
    names: list[tuple[str, str]] = []
    tasks = [*cfg.tasks, *(t for stage in cfg.stages for t in stage.tasks)]
    for task in tasks:
        names.append(("tasks", task.name))
        if "source" in task.data:
            names.append(("data_sources", task.data["source"]))
        names += [("losses", term.name) for term in task.losses or ()]
        names += [("metrics", metric) for metric in task.metrics or ()]
    for stage in cfg.stages:
        names += [("stage_transforms", t.name) for t in stage.transforms]
    return names


def test_the_docs_give_run_files():
    """The scan finds the docs' run files (a broken pattern would pass every check vacuously)."""
    assert len(BLOCKS) >= 10, [where for where, _ in BLOCKS]


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_documented_run_file_parses_and_names_registered_components(where, block, tmp_path):
    whole = "[[tasks]]" in block or "[[stages]]" in block
    run = tmp_path / "run.toml"
    run.write_text(block if whole else block + ONE_TASK, "utf-8")
    cfg = load_run_file(run)
    registries = get_registry()
    missing = [
        f"{kind} {name!r}" for kind, name in _names(cfg) if name not in getattr(registries, kind)
    ]
    assert not missing, f"{where} names components nobody registers: {missing}"
    if not cfg.model.init_from:  # the model's own names (modalities, bottleneck, heads...)
        with torch.device("meta"):
            meta_tokenizer(cfg)
