"""The core and the tokenizer name no modality: everything modality-specific comes from it."""

from __future__ import annotations

import ast
from pathlib import Path

import atoken

ROOT = Path(__file__).resolve().parents[1]
GUARDED = [
    *sorted((ROOT / "core").rglob("*.py")),
    *(ROOT / "atoken" / f for f in ("tokenizer.py", "factory.py")),
]
#: Literals that equal a modality name but mean something else: (file, value, why).
NOT_MODALITIES = {
    ("core/siglip.py", "depth"),  # the backbone's depth, a config key
    ("atoken/engine/runconfig_legacy.py", "video"),  # the pre-0.2 run-file section [video]
}


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_modality_name_is_a_string_literal_in_core_or_the_tokenizer():
    names = set(atoken.get_registry().modalities.names())
    assert {"image", "video"} <= names  # the check below is not vacuous
    found = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in GUARDED
        for line, value in _string_constants(path)
        if value in names and (str(path.relative_to(ROOT)), value) not in NOT_MODALITIES
    ]
    assert not found, "modality names as literals:\n" + "\n".join(found)


def test_the_check_sees_a_literal(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('SLOTS = {"image": 1}\n')
    assert (1, "image") in _string_constants(bad)
