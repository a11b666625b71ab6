"""Baselines that a learned tokenizer must beat.

:class:`PCATokenizer` is the best *linear* tokenizer with a given latent size: PCA of p x p x 3
training patches keeping ``latent_dim`` components per patch (the minimum-MSE linear
encoder/decoder pair for those patches). :class:`TransformCoder` is the classical discrete
baseline at a bit budget: those PCA codes, each uniformly quantized.

Shapes: patches [n, p * p * 3] -> codes [n, latent_dim] -> patches [n, p * p * 3].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from atoken.core.errors import ConfigError
from atoken.modalities.image import ImageModality

__all__ = ["PCATokenizer", "TransformCoder"]


class PCATokenizer:
    """PCA over image patches, fitted on crops and applied to whole images.

    Args:
        latent_dim: components kept per patch.
        patch_size: the patch side p (16, as the tokenizer's).
    """

    def __init__(self, *, latent_dim: int, patch_size: int = 16) -> None:
        self.latent_dim, self.patch_size = latent_dim, patch_size
        self._modality = ImageModality(patch_size=patch_size, temporal_patch=1, max_tokens=10**7)
        self.mean: torch.Tensor | None = None
        self.components: torch.Tensor | None = None  # [latent_dim, p*p*3]

    def _patches(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._modality.pack(list(images)).feats.double()  # [n, p*p*3]

    def fit(self, images: Sequence[torch.Tensor]) -> PCATokenizer:
        """Fit on the patches of ``images`` (float ``[3, H, W]`` in [0, 1])."""
        x = self._patches(images)
        if x.shape[0] <= self.latent_dim:
            raise ConfigError(f"PCA needs more than {self.latent_dim} patches, got {x.shape[0]}")
        self.mean = x.mean(0)
        # principal directions = right singular vectors of the centred patch matrix
        _, _, vh = torch.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vh[: self.latent_dim]  # [k, d]
        return self

    def reconstruct(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Encode and decode each image; returns float ``[3, H, W]`` clamped to [0, 1]."""
        if self.components is None or self.mean is None:
            raise ConfigError("PCATokenizer.reconstruct called before fit")
        latent = self._modality.pack(list(images))
        x = latent.feats.double() - self.mean  # [n, d]
        codes = x @ self.components.T  # [n, k]
        back = (codes @ self.components + self.mean).float()  # [n, d]
        return [y.clamp(0, 1) for y in self._modality.unpack(latent.replace(feats=back))]


def _uniform_quantize(x: torch.Tensor, step: float, levels: int) -> torch.Tensor:
    """Midrise uniform quantizer with ``levels`` cells of width ``step`` centred on 0."""
    if levels <= 1:
        return torch.zeros_like(x)
    half = levels / 2
    cell = torch.floor(x / step).clamp(-half, half - 1)  # cell index in [-L/2, L/2 - 1]
    return (cell + 0.5) * step


def _best_step(x: torch.Tensor, levels: int) -> tuple[float, float]:
    """(step, mean squared error) of the uniform ``levels``-cell quantizer of codes ``x``
    with the least training error (the step searched over 0.02 ... 3 standard deviations)."""
    if levels <= 1:
        return 0.0, float((x**2).mean())
    sigma = float(x.std()) or 1.0
    best = (sigma, math.inf)
    for factor in torch.linspace(0.02, 3.0, 150).tolist():
        step = factor * sigma * 4 / levels  # levels * step spans factor * 4 sigma
        err = float(((_uniform_quantize(x, step, levels) - x) ** 2).mean())
        if err < best[1]:
            best = (step, err)
    return best


class TransformCoder:
    """Classical transform coding: PCA codes, each uniformly quantized, at a fixed bit budget.

    The honest discrete baseline for a discrete tokenizer: the PCA of the patches with
    ``latent_dim`` components, component ``i`` quantized to ``2 ** bits[i]`` uniform levels
    (the step of least training error), ``sum(bits)`` bits per 16 x 16 patch (token).
    ``allocation="uniform"`` gives every component ``bits_per_token / latent_dim`` bits (as an
    FSQ latent of that many channels at the same levels); ``"optimal"`` hands out the bits one
    by one to the component whose measured training error falls most (greedy marginal
    return, optimal for convex rate-distortion curves), so high-variance components get more
    and the weakest may get none.

    Args:
        pca: a fitted :class:`PCATokenizer`.
        bits: bits per component, ``[latent_dim]`` ints >= 0.
        steps: quantizer step per component.
    """

    def __init__(self, pca: PCATokenizer, bits: Sequence[int], steps: Sequence[float]) -> None:
        self.pca, self.bits, self.steps = pca, [int(b) for b in bits], [float(s) for s in steps]

    @property
    def bits_per_token(self) -> int:
        return sum(self.bits)

    @classmethod
    def fit(
        cls,
        pca: PCATokenizer,
        images: Sequence[torch.Tensor],
        *,
        bits_per_token: int,
        allocation: str = "uniform",
        max_bits: int = 12,
    ) -> TransformCoder:
        """Fit the quantizers on the PCA codes of ``images`` (the training crops).

        Raises:
            ConfigError: an unfitted PCA, an unknown allocation, or a budget that the uniform
                allocation cannot split evenly.
        """
        if pca.components is None or pca.mean is None:
            raise ConfigError("TransformCoder.fit needs a fitted PCATokenizer")
        k = pca.latent_dim
        codes = (pca._patches(images) - pca.mean) @ pca.components.T  # [n, k]
        if allocation == "uniform":
            if bits_per_token % k:
                raise ConfigError(
                    f"uniform allocation: {bits_per_token} bits do not split over {k} components"
                )
            bits = [bits_per_token // k] * k
        elif allocation == "optimal":
            errors = [
                [_best_step(codes[:, i], 2**b)[1] for b in range(max_bits + 1)] for i in range(k)
            ]
            bits = [0] * k
            for _ in range(bits_per_token):
                gains = [
                    errors[i][bits[i]] - errors[i][bits[i] + 1] if bits[i] < max_bits else -1.0
                    for i in range(k)
                ]
                bits[max(range(k), key=gains.__getitem__)] += 1
        else:
            raise ConfigError(f"allocation must be 'uniform' or 'optimal', got {allocation!r}")
        steps = [_best_step(codes[:, i], 2 ** bits[i])[0] for i in range(k)]
        return cls(pca, bits, steps)

    def reconstruct(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Encode, quantize and decode each image; float ``[3, H, W]`` clamped to [0, 1]."""
        pca = self.pca
        latent = pca._modality.pack(list(images))
        codes = (latent.feats.double() - pca.mean) @ pca.components.T  # [n, k]
        quantized = torch.stack(
            [
                _uniform_quantize(codes[:, i], self.steps[i], 2 ** self.bits[i])
                for i in range(len(self.bits))
            ],
            dim=1,
        )  # [n, k]
        back = (quantized @ pca.components + pca.mean).float()  # [n, d]
        return [y.clamp(0, 1) for y in pca._modality.unpack(latent.replace(feats=back))]
