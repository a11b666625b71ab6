"""The ``atoken`` command line (click), one module per command group. ``atoken --help`` lists
the commands.

:data:`main` is the group (:mod:`atoken.cli.group`); the commands written here are added below.
A family's commands arrive through the ``register_commands`` hook and live in the family's
package (``atoken data import meshes``: :mod:`atoken.modalities.mesh.cli`).
"""

from __future__ import annotations

from atoken.cli.checkpoint import checkpoint
from atoken.cli.classify import classify
from atoken.cli.convert import convert
from atoken.cli.data import data
from atoken.cli.encode import encode
from atoken.cli.eval import eval_command
from atoken.cli.group import main
from atoken.cli.plugins import plugins, plugins_report
from atoken.cli.reconstruct import reconstruct
from atoken.cli.report import report
from atoken.cli.train import train

__all__ = ["main", "plugins_report"]

main.add_command(plugins)
main.add_command(train)
main.add_command(reconstruct)
main.add_command(eval_command)
main.add_command(data)
main.add_command(encode)
main.add_command(classify)
main.add_command(report)
main.add_command(convert)
main.add_command(checkpoint)
