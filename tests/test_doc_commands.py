"""Every ``atoken`` command line the docs give names a real command and real options.

Scanned: README.md and docs/**/*.md. In shell blocks (fences without a language, or ``bash``,
``console``, ``sh``, ``shell``; indented ones too) every line that runs ``atoken ...``,
``.venv/bin/atoken ...``, ``python -m atoken ...`` or ``torchrun ... -m atoken ...``
(continuation backslashes joined; a leading ``$`` and ``VAR=value`` settings dropped) must
resolve to a command, and each ``--option`` it passes, bracketed as optional or not, must be one
of that command's. Inline code ``atoken <command> ...`` is checked the same way when its first
word is a command (prose such as "atoken tiny" is not a command line); from there on, a
subcommand that does not exist fails too. Plugin commands count when the plugin is installed,
as for a user: the group is built with ``register_commands`` first.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest

from atoken.cli import main
from tests.doc_pages import DOCS, FENCE, code_blocks, page_name

SHELL = {"", "bash", "console", "sh", "shell"}
RUNS = re.compile(
    r"^(?:\$\s*)?(?:\w+=\S*\s+)*(?:.*\s-m\s+atoken|python\s+-m\s+atoken|(?:\S*/)?atoken)\s+(.*)$"
)
INLINE = re.compile(r"`atoken ([^`]+)`")


def _command_lines() -> list[tuple[str, str, bool]]:
    """``(doc, arguments after 'atoken', strict)``; strict lines must name a command."""
    found = []
    for doc in DOCS:
        for language, block in code_blocks(doc):
            if language not in SHELL:
                continue
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                match = RUNS.match(line.strip())
                if match:
                    found.append((page_name(doc), match.group(1), True))
        prose = FENCE.sub("", doc.read_text("utf-8"))
        found += [(page_name(doc), words, False) for words in INLINE.findall(prose)]
    return found


def _resolve(words: list[str]) -> tuple[click.Command | None, list[str]]:
    """The command ``words`` names, and the path walked (``None`` when a word is not one)."""
    command: click.Command = main
    path = ["atoken"]
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        sub = command.get_command(click.Context(command), words[0])
        if sub is None:
            return None, [*path, words[0]]
        command = sub
        path.append(words.pop(0))
    return command, path


def _options(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


LINES = _command_lines()


def test_the_docs_give_command_lines():
    """The scan finds the docs' commands (a broken pattern would pass every check vacuously)."""
    strict = [line for line in LINES if line[2]]
    assert len(strict) >= 40, strict
    assert any(args.startswith("train ") for _, args, _ in strict)


def _problems(lines: list[tuple[str, str, bool]]) -> list[str]:
    """What is wrong with ``(doc, arguments after 'atoken', strict)`` command lines."""
    main.build()
    bad = []
    for doc, args, strict in lines:
        try:
            words = shlex.split(args.split(" #")[0])
        except ValueError:
            words = args.split()
        words = [w.strip("[]|") for w in words if w.strip("[]|")]  # [--skip-bad] is optional
        command, path = _resolve(words)
        if command is None:
            if strict or len(path) > 2:  # inline prose ("atoken tiny") names no command
                bad.append(f"{doc}: no command {' '.join(path)!r} in `atoken {args}`")
            continue
        known = _options(command)
        bad += [
            f"{doc}: {' '.join(path)} has no option {word.split('=')[0]!r} in `atoken {args}`"
            for word in words
            if word.startswith("--") and word.split("=")[0] not in known
        ]
    return bad


def test_every_documented_command_line_names_real_commands_and_options():
    bad = _problems(LINES)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("line", "culprit"),
    [
        (("d.md", "train --no-such-flag run.toml", True), "no option '--no-such-flag'"),
        (("d.md", "train run.toml [--resumee]", True), "no option '--resumee'"),
        (("d.md", "no-such-command x", True), "no command 'atoken no-such-command'"),
        (("d.md", "data import vidoes x.zarr", False), "no command 'atoken data import vidoes'"),
    ],
)
def test_the_check_catches_a_renamed_option_or_command(line, culprit):
    (problem,) = _problems([line])
    assert culprit in problem


def test_prose_in_inline_code_is_not_a_command_line():
    assert _problems([("d.md", "tiny (KL 32)", False)]) == []
