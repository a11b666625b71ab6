"""Run-file values of the wrong type or range are ConfigErrors naming the section and key."""

from __future__ import annotations

import pytest

from atoken.core.errors import ConfigError
from atoken.engine.runconfig import load_run_file

TASK = '[[tasks]]\nname = "image_reconstruction"\n'


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('[train]\nsteps = "100"\n', r"\[train\] steps must be an int, got '100'"),
        ("[train]\nsteps = 1.5\n", r"\[train\] steps must be an int"),
        ("[train]\nsteps = true\n", r"\[train\] steps must be an int, got True"),
        ("[optim]\ngrad_accum = 2.5\n", r"\[optim\] grad_accum must be an int"),
        ("[optim]\nlr = inf\n", r"\[optim\] lr must be a finite number"),
        ("[optim]\nlr = nan\n", r"\[optim\] lr must be a finite number"),
        ('[run]\nseed = "abc"\n', r"\[run\] seed must be an int"),
        ("[train]\nema_decay = 2.0\n", r"\[train\] ema_decay must be in \[0, 1\)"),
        ('[train]\nprogress = "no"\n', r"\[train\] .*progress"),
        ("[[train]]\nsteps = 1\n", r"section \[train\] must be a table.*\[\[train\]\]"),
        ("", r"losses.*weight must be a finite number"),
    ],
)
def test_bad_values_name_the_section_and_key(tmp_path, body, match):
    path = tmp_path / "run.toml"
    task = TASK + ('losses = [{ name = "l1", weight = "big" }]\n' if not body else "")
    path.write_text(body + task)
    with pytest.raises(ConfigError, match=match):
        load_run_file(path)


def test_a_folder_or_a_binary_file_is_not_a_run_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_run_file(tmp_path)
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="is not text"):
        load_run_file(binary)
