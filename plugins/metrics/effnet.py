"""The frozen EfficientNet-Lite0 of ``fd_effnet`` (it lives in :mod:`atoken.losses.effnet`, beside
the Gram loss that also uses it, so losses never import plugins)."""

from atoken.losses.effnet import EfficientNetLite0, effnet_weights_path

__all__ = ["EfficientNetLite0", "effnet_weights_path"]
