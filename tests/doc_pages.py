"""The pages the docs tests read, and their fenced code blocks (one scan for every test).

``DOCS``: README.md and docs/**/*.md. :func:`code_blocks` gives each fenced block of a page as
``(language, body)``, indented fences (inside a list item) included.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)


def page_name(doc: Path) -> str:
    """``docs/data.md``: a page as the messages name it."""
    return doc.relative_to(ROOT).as_posix()


def code_blocks(doc: Path) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block of ``doc``, in page order."""
    return FENCE.findall(doc.read_text("utf-8"))
