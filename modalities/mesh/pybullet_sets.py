"""Textured meshes that install offline: ``pybullet_data`` (PyPI ``pybullet``), split by object.

Paths are relative to ``pybullet_data.getDataPath()`` (checked by rendering, see the project's
3D scouting notes). The four racecar wheels are one mesh, so all of them stay out of
training; ``laikago/upper_leg_mirror*`` mirror ``upper_leg_left`` and are not used.
"""

from __future__ import annotations

import os

from atoken.core.errors import ConfigError

__all__ = ["HELDOUT", "TRAIN", "pybullet_paths", "pybullet_root"]

TRAIN: tuple[str, ...] = (
    "duck.obj", "textured_sphere_smooth.obj", "domino/domino.obj", "jenga/jenga.obj",
    "table/table.obj", "tray/tray_textured.obj", "tray/tray_textured4.obj",
    "laikago/chassis.obj", "laikago/hip_motor.obj", "laikago/upper_leg_left.obj",
    "aliengo/meshes/trunk.obj", "aliengo/meshes/thigh.obj", "a1/meshes/trunk.obj",
    "franka_panda/meshes/visual/link3.obj", "franka_panda/meshes/visual/link4.obj",
    "franka_panda/meshes/visual/link5.obj", "franka_panda/meshes/visual/hand.obj",
    "franka_panda/meshes/visual/finger.obj", "racecar/meshes/hokuyo.obj", "quadruped/tmotor3.obj",
)  # fmt: skip
HELDOUT: tuple[str, ...] = (
    "soccerball.obj", "laikago/lower_leg3.obj", "aliengo/meshes/calf.obj",
    "franka_panda/meshes/visual/link6.obj", "racecar/meshes/left_front_wheel.obj",
)  # fmt: skip


def pybullet_root() -> str:
    """``pybullet_data.getDataPath()``.

    Raises:
        ConfigError: pybullet is not installed.
    """
    try:
        import pybullet_data
    except ImportError as exc:
        raise ConfigError("the pybullet meshes need `pip install pybullet`") from exc
    return pybullet_data.getDataPath()


def pybullet_paths(which: str = "all") -> list[str]:
    """Absolute paths of the ``train``, ``heldout`` or ``all`` set.

    Raises:
        ConfigError: an unknown set, or pybullet not installed.
    """
    sets = {"train": TRAIN, "heldout": HELDOUT, "all": TRAIN + HELDOUT}
    if which not in sets:
        raise ConfigError(f"pybullet set must be one of {sorted(sets)}, got {which!r}")
    root = pybullet_root()
    return [os.path.join(root, p) for p in sets[which]]
