"""Where pretrained weights are looked up. Nothing here downloads.

A component that needs a weights file takes an explicit local path; without one it looks in
the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file name>`` (``$TORCH_HOME/hub``,
by default ``~/.cache/torch/hub``), where torchvision and pytorch-fid keep their downloads.
When the file is in neither place, :func:`locate_weights` raises ``WeightsNotFoundError``
naming the file, the places searched and how to provide it.

Public: the losses, the metrics and the text encoders find their weights through it, and so
may a plugin's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from atoken.core.errors import WeightsNotFoundError

__all__ = [
    "TORCHVISION_WEIGHTS",
    "explicit_file",
    "hub_checkpoint_dir",
    "load_state_dict",
    "locate_weights",
]

#: torchvision ImageNet weights used by LPIPS and the Gram loss: architecture -> (file, url).
TORCHVISION_WEIGHTS: dict[str, tuple[str, str]] = {
    "alexnet": (
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    ),
    "vgg16": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}


def hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: torchvision's download cache."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def explicit_file(path: str | os.PathLike, message: str) -> Path:
    """``path`` (user-expanded) when it is a file, else ``WeightsNotFoundError(message)``."""
    candidate = Path(os.fspath(path)).expanduser()
    if not candidate.is_file():
        raise WeightsNotFoundError(message)
    return candidate


def locate_weights(
    filename: str,
    *,
    path: str | os.PathLike | None,
    what: str,
    url: str,
    param: str = "weights_path",
) -> Path:
    """The weights file: ``path`` if given, else ``hub_checkpoint_dir() / filename``.

    Args:
        filename: the file name in the hub cache.
        path: an explicit local file (checked, never replaced by the cache).
        what: what the weights are, for the message (e.g. ``"torchvision AlexNet"``).
        url: where the user can fetch the file on a machine with internet access.
        param: the parameter that takes a local path, for the message.

    Raises:
        WeightsNotFoundError: the file is not there.
    """
    if path is not None:
        return explicit_file(
            path,
            f"{what} weights: {param}={os.fspath(path)!r} is not a file. Pass the path of "
            f"{filename!r} (download it from {url} on a machine with internet access).",
        )
    cached = hub_checkpoint_dir() / filename
    if cached.is_file():
        return cached
    raise WeightsNotFoundError(
        f"{what} weights {filename!r} not found: looked in the torch hub cache {cached} "
        f"(torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it). Nothing is downloaded. "
        f"Copy the file there (from {url}) or give its path: in a run file "
        f'params = {{ {param} = "/path/to/{filename}" }} on the loss or metric, in Python '
        f"{param}='/path/to/{filename}'."
    )


def load_tensors(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with a typed error naming the file."""
    from atoken.core.errors import CheckpointError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointError(
            f"{path}: not a weights file that loads with torch.load(weights_only=True) (tensors "
            f"and plain containers only): {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` of a state dict on the CPU, tensors only (``weights_only=True``).

    Raises:
        CheckpointError: the file does not load that way (a pickled object, a damaged file),
            naming the file.
    """
    state = load_tensors(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state
