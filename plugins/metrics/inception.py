"""The FID Inception-v3 (the TensorFlow FID graph ported to PyTorch), for the ``rfid`` metric.

Shapes: x ``[B, 3, H, W]`` in [0, 1] is resized to ``[B, 3, 299, 299]`` (bilinear, no
antialiasing, as the FID reference code does), scaled to [-1, 1] and mapped to the pool3
feature ``[B, 2048]``.

The network is torchvision's Inception-v3 (1008 classes, no auxiliary head) in which the
pooling branch of the A, C and E blocks matches TensorFlow: average pooling ignores the
padding, and the last E block max-pools. Its weights are pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth``; atoken reads them from ``weights_path`` or the torch
hub cache and never downloads them (``WeightsNotFoundError`` says how to provide the file).
pytorch-fid itself is not needed.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import ConfigError
from atoken.losses.weight_files import load_state_dict, locate_weights

__all__ = ["FID_WEIGHTS_FILE", "FID_WEIGHTS_URL", "FIDInceptionV3"]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
)


class _TFPoolBranch:
    """Recompute the block's pooling branch the TensorFlow way (a mixin for torchvision blocks)."""

    max_pool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self._forward(x)  # torchvision's branches; the last is the pooling branch
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        outputs[-1] = self.branch_pool(pooled)
        return torch.cat(outputs, 1)


def _blocks() -> dict[str, nn.Module]:
    from torchvision.models import inception as tv

    class BlockA(_TFPoolBranch, tv.InceptionA):
        pass

    class BlockC(_TFPoolBranch, tv.InceptionC):
        pass

    class BlockE(_TFPoolBranch, tv.InceptionE):
        pass

    class BlockEMax(_TFPoolBranch, tv.InceptionE):
        max_pool = True

    return {
        "Mixed_5b": BlockA(192, pool_features=32),
        "Mixed_5c": BlockA(256, pool_features=64),
        "Mixed_5d": BlockA(288, pool_features=64),
        "Mixed_6b": BlockC(768, channels_7x7=128),
        "Mixed_6c": BlockC(768, channels_7x7=160),
        "Mixed_6d": BlockC(768, channels_7x7=160),
        "Mixed_6e": BlockC(768, channels_7x7=192),
        "Mixed_7b": BlockE(1280),
        "Mixed_7c": BlockEMax(2048),
    }


_ORDER = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool1",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool2",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
    "avgpool",
)


class FIDInceptionV3(nn.Module):
    """Frozen FID Inception-v3 giving pool3 features ``[B, 2048]``.

    Args:
        weights_path: a local ``pt_inception-2015-12-05-6726825d.pth``; default: the hub cache.
        random_weights_for_tests: skip loading (wiring tests only; such features are not FID).

    Raises:
        WeightsNotFoundError: the weights file is neither at ``weights_path`` nor in the cache.
    """

    feature_dim = 2048
    input_size = 299

    def __init__(
        self,
        *,
        weights_path: str | os.PathLike | None = None,
        random_weights_for_tests: bool = False,
    ) -> None:
        super().__init__()
        path = None
        if not random_weights_for_tests:
            path = locate_weights(
                FID_WEIGHTS_FILE, path=weights_path, what="rfid: FID Inception", url=FID_WEIGHTS_URL
            )
        from torchvision.models.inception import Inception3

        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        for name, block in _blocks().items():
            setattr(net, name, block)
        if path is not None:
            try:
                net.load_state_dict(load_state_dict(path), strict=True)
            except RuntimeError as exc:
                raise ConfigError(
                    f"rfid: {path} is not the FID Inception state dict: {exc}"
                ) from exc
        self.net = net.requires_grad_(False).eval()
        self.weights_path = path
        self.is_fid = path is not None

    def train(self, mode: bool = True) -> FIDInceptionV3:
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> pool3 features ``[B, 2048]``."""
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        h = 2 * x - 1  # [B, 3, 299, 299] in [-1, 1]
        for name in _ORDER:
            h = getattr(self.net, name)(h)
        return h.flatten(1)  # [B, 2048]
