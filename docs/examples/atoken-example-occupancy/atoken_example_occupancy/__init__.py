"""atoken-example-occupancy: 3D occupancy grids with their own head and loss, as a plugin.

Installed, it is found through its entry point (``[project.entry-points.atoken]`` in its
``pyproject.toml``) and adds three components, one per registration hook:

* the modality ``occupancy`` (:class:`OccupancyModality`, layout xyz: coords (0, x, y, z));
* the head ``occupancy`` (:class:`OccupancyHead`), the modality's ``default_head``: the
  tokenizer builds one for it and decodes occupancy samples to probability grids;
* the loss ``occupancy_bce`` (:class:`OccupancyBCELoss`) that trains them.
"""

from __future__ import annotations

import atoken
from atoken_example_occupancy.head import OccupancyHead
from atoken_example_occupancy.loss import OccupancyBCELoss
from atoken_example_occupancy.modality import OccupancyModality

__all__ = ["OccupancyBCELoss", "OccupancyHead", "OccupancyModality"]


@atoken.hookimpl
def register_modalities(register) -> None:
    register("occupancy", OccupancyModality)


@atoken.hookimpl
def register_heads(register) -> None:
    register("occupancy", OccupancyHead)


@atoken.hookimpl
def register_losses(register) -> None:
    register("occupancy_bce", OccupancyBCELoss)
