"""Old import paths of moved modules still work (#31): the same module, with a warning."""

from __future__ import annotations

import json
import subprocess
import sys

from atoken.moved import MOVED

#: Run in a fresh interpreter, so no old path is imported already.
CHECK = """
import importlib, json, sys, warnings
import atoken
from atoken.moved import MOVED
bad = []
for old, new in sorted(MOVED.items()):
    module = importlib.import_module(new)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module(old)
    said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    if alias is not module or alias.__spec__.name != new or not any(new in m for m in said):
        bad.append([old, new, said])
print(json.dumps({"checked": len(MOVED), "bad": bad}))
"""


def test_every_old_path_gives_the_moved_module_with_a_deprecation_warning():
    assert "atoken.core.runconfig" in MOVED and "atoken.core.latent_store" in MOVED
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"checked": len(MOVED), "bad": []}


def test_a_from_import_of_an_old_path_works():
    code = "from atoken.core import trainer; from atoken.engine.trainer import Trainer\n"
    code += "assert trainer.Trainer is Trainer"
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True)
    assert run.returncode == 0, run.stderr[-1500:]
