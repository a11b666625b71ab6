"""The kit of plugin authors behind ``atoken plugins new`` and ``atoken plugins check``.

* :func:`new_plugin` writes a working package ``atoken-NAME/`` of one kind (a modality, a
  loss, a head or a data source) from the templates in ``templates/``: the component, its
  hook, tests that run its contracts and a Hypothesis property, and for a modality or a data
  source a run file that trains it with the generic ``reconstruction`` task.
* :func:`check_plugin` runs the contracts of every component an installed plugin registered.
"""

from __future__ import annotations

from atoken.scaffold.check import ComponentCheck, check_plugin
from atoken.scaffold.writer import KINDS, new_plugin

__all__ = ["KINDS", "ComponentCheck", "check_plugin", "new_plugin"]
