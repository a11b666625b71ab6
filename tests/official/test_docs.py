"""The Python examples of ``docs/official-weights.md`` run as written."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "official-weights.md"


def test_the_python_blocks_of_the_official_weights_page_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})


def test_the_page_is_linked_from_the_index():
    index = (DOC.parent / "index.md").read_text()
    assert "(official-weights.md)" in index
