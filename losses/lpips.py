"""The ``lpips`` loss: the learned perceptual distance of Zhang et al. (the ``lpips`` package).

Shapes: images ``[B, 3, H, W]`` or lists of ``[3, H_i, W_i]`` in [0, 1] are resized to
``S x S`` (224) and batched to ``[B, 3, S, S]``; :meth:`LPIPSLoss.distance` gives ``[B]``
per-image distances and the loss is their mean.

Weights come from two places. The linear heads ship inside the ``lpips`` package. The
AlexNet/VGG16 trunk is torchvision's ImageNet model, which the ``lpips`` package would download;
here it is read from ``weights_path`` or from the torch hub cache
(``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``), and
a missing file raises ``WeightsNotFoundError`` at construction, before anything could download.

``random_backbone_for_tests=True`` keeps a randomly initialised trunk. That is for wiring tests
only: such an object is labelled as not LPIPS (``is_lpips`` is False) and the ``lpips`` metric
refuses it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.losses.image_batch import ImageBatch, check_size, image_pairs, resized_batch
from atoken.losses.weight_files import TORCHVISION_WEIGHTS, load_state_dict, locate_weights
from atoken.plugins.hookspecs import hookimpl

__all__ = ["LPIPSLoss", "build_lpips"]

_TRUNKS = {"alex": "alexnet", "vgg": "vgg16"}


def _load_trunk(model: nn.Module, path: Path, arch: str) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into the lpips trunk ``slice<k>.<i>.*``."""
    state = load_state_dict(path)
    trunk = {}
    for name in model.net.state_dict():
        _, index, param = name.split(".")  # "slice2.3.weight"
        key = f"features.{index}.{param}"
        if key not in state:
            raise ConfigError(f"lpips: {path} is not a torchvision {arch} state dict: no {key!r}")
        trunk[name] = state[key]
    model.net.load_state_dict(trunk, strict=True)


def build_lpips(net: str, trunk_path: Path | None, *, version: str = "0.1") -> nn.Module:
    """An ``lpips.LPIPS`` model with its packaged linear heads and the trunk from
    ``trunk_path`` (``None``: a random trunk, for tests only). Never downloads."""
    import lpips

    # The trunk is always built random (nothing downloads) and then filled from the file.
    random_trunk = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained` argument
        model = lpips.LPIPS(net=net, version=version, pnet_rand=random_trunk, verbose=False)
    if trunk_path is not None:
        _load_trunk(model, trunk_path, _TRUNKS[net])
    model.pnet_rand = trunk_path is None
    return model.requires_grad_(False).eval()


class LPIPSLoss(nn.Module):
    """LPIPS between prediction and target, averaged over images.

    Args:
        net: the trunk, ``"vgg"`` (default for training) or ``"alex"``.
        weights_path: a local torchvision weights file for the trunk; default: the hub cache.
        size: the resize side S (or ``(height, width)``); default 224.
        version: LPIPS linear-head version, ``"0.1"``.
        random_backbone_for_tests: keep a random trunk (wiring tests only; not LPIPS).

    Raises:
        WeightsNotFoundError: the trunk weights are neither at ``weights_path`` nor in the cache.
    """

    name = "lpips"
    inputs = "samples"  # what it consumes (docs/losses.md#inputs)

    def __init__(
        self,
        *,
        net: str = "vgg",
        weights_path: str | os.PathLike | None = None,
        size: int | Sequence[int] | None = 224,
        version: str = "0.1",
        random_backbone_for_tests: bool = False,
    ) -> None:
        super().__init__()
        if net not in _TRUNKS:
            raise ConfigError(f"lpips: net must be one of {sorted(_TRUNKS)}, got {net!r}")
        if version not in ("0.0", "0.1"):
            raise ConfigError(f"lpips: version must be '0.0' or '0.1', got {version!r}")
        self.net_name, self.version = net, version
        self.size = check_size(size, who="lpips")
        self.is_lpips = not random_backbone_for_tests
        #: The key its value is logged under (metrics.jsonl, TensorBoard): a stand-in says so.
        self.log_name = "lpips" if self.is_lpips else "lpips_random_trunk_NOT_LPIPS"
        if random_backbone_for_tests:
            self.weights_path = None
            self.label = f"random-trunk {net} LPIPS stand-in (wiring tests only; NOT LPIPS)"
        else:
            filename, url = TORCHVISION_WEIGHTS[_TRUNKS[net]]
            self.weights_path = locate_weights(
                filename, path=weights_path, what=f"lpips: torchvision {_TRUNKS[net]}", url=url
            )
            self.label = f"LPIPS v{version} ({net})"
        self.model: nn.Module | None = None

    @staticmethod
    def planned_parameters(*, net: str = "vgg", version: str = "0.1", **_: Any) -> int:
        """The parameters of the frozen ``lpips.LPIPS`` network (trunk and linear heads),
        counted on the meta device without the trunk's weights (``atoken train --plan``)."""
        if net not in _TRUNKS:
            raise ConfigError(f"lpips: net must be one of {sorted(_TRUNKS)}, got {net!r}")
        with torch.device("meta"):
            model = build_lpips(net, None, version=version)
        return sum(p.numel() for p in model.parameters())

    def extra_repr(self) -> str:
        return self.label

    def network(self, device: torch.device | str = "cpu") -> nn.Module:
        """The ``lpips.LPIPS`` module, built on first call (then moved to ``device``)."""
        if self.model is None:
            self.model = build_lpips(self.net_name, self.weights_path, version=self.version)
        return self.model.to(device)

    def train(self, mode: bool = True) -> LPIPSLoss:
        super().train(mode)
        if self.model is not None:
            self.model.eval()  # frozen: its dropout layers stay off
        return self

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS ``[B]`` of two batches ``[B, 3, H, W]`` in [0, 1] (no resizing)."""
        out = self.network(x.device)(x, y, normalize=True)  # [B, 1, 1, 1]
        return out.reshape(x.shape[0])  # [B]

    def forward(
        self, prediction: ImageBatch, target: ImageBatch, context: Mapping[str, Any]
    ) -> torch.Tensor:
        preds, targets = image_pairs(prediction, target, who="lpips")
        x = resized_batch(preds, self.size, who="lpips")  # [B, 3, S, S]
        y = resized_batch(targets, self.size, who="lpips")  # [B, 3, S, S]
        return self.distance(x, y).mean()


@hookimpl
def register_losses(register) -> None:
    register("lpips", LPIPSLoss)
