"""Test helpers: stand-in weight files (the right layout, random values, tiny on disk), an
isolated torch hub directory, and single-threaded compute.

The stand-ins let the weight-loading paths run exactly as with real files, with an outside
oracle (``lpips.LPIPS`` loading the same file through torchvision) where one exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


def fake_torchvision_weights(directory: Path, arch: str, seed: int = 0) -> Path:
    """A torchvision ``alexnet``/``vgg16`` state dict under its hub file name in ``directory``.

    The trunk (``features.*``) is random (scaled by 1/sqrt(fan-in)); the classifier tensors are
    stride-0 zeros, so the file holds only the trunk's bytes and still loads strictly into
    torchvision's model. The model is laid out on the meta device, so nothing is initialised.
    """
    import torchvision

    from atoken.losses.weight_files import TORCHVISION_WEIGHTS

    with torch.device("meta"):
        layout = getattr(torchvision.models, arch)(weights=None).state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, ref in layout.items():
        if not name.startswith("features."):
            state[name] = torch.zeros(1).expand(ref.shape)
        elif ref.ndim == 4:
            fan_in = ref.shape[1] * ref.shape[2] * ref.shape[3]
            state[name] = torch.randn(ref.shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            state[name] = torch.randn(ref.shape, generator=g) * 0.01
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TORCHVISION_WEIGHTS[arch][0]
    torch.save(state, path)
    return path


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub directory in place of the real one; returns its checkpoints dir."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_download(*args, **kwargs):  # pragma: no cover - reached only on a regression
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub / "checkpoints"


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One thread for torch and for numpy's BLAS/LAPACK. The two cores here are shared, and
    small convolutions or eigendecompositions stall badly (4x and worse) when a parallel
    region waits on a descheduled sibling thread."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)
