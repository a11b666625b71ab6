"""Built-in evaluation metrics, each module a plugin registering through ``register_metrics``.

A metric is a stateful object: ``reset()``, ``update(prediction, target)`` with image batches
(``[B, 3, H, W]`` or lists of ``[3, H_i, W_i]`` in [0, 1]) and ``compute() -> dict[str, float]``.

* :mod:`atoken.plugins.metrics.pixel`: ``psnr``, ``ssim`` (kornia, per image, averaged).
* :mod:`atoken.plugins.metrics.perceptual`: ``lpips`` (real weights only), ``fd_effnet`` and
  ``rfid`` (Fréchet distances with their mean and covariance terms).
* :mod:`atoken.plugins.metrics.effnet`, :mod:`atoken.plugins.metrics.inception`: the frozen
  feature networks (EfficientNet-Lite0 is also the Gram loss's default network).
"""

__all__: list[str] = []
