"""Baselines that a learned tokenizer must beat.

:class:`PCATokenizer` is the best *linear* tokenizer with a given latent size: PCA of p x p x 3
training patches keeping ``latent_dim`` components per patch (the minimum-MSE linear
encoder/decoder pair for those patches).

Shapes: patches [n, p * p * 3] -> codes [n, latent_dim] -> patches [n, p * p * 3].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from atoken.core.errors import ConfigError
from atoken.modalities.image import ImageModality

__all__ = ["PCATokenizer"]


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
