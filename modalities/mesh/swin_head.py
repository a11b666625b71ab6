"""The ``swin_gaussians`` head: the official two-stage 3D output as one head.

The official pipeline decodes a 3D latent in two networks: the AToken decoder reconstructs each
voxel's patch (its ``out_layer``), and a separate network, ``SLatGaussianDecoder``
(:class:`~.swin_decoder.SwinGaussianDecoder`), turns the first F values of every patch
(``rec.feats[:, :768]``, still normalised to [-1, 1]) into K Gaussians per voxel. This head is
both: ``pixels`` holds the first F rows of the patch layer, ``gaussian`` the Gaussian decoder.

Shapes (N voxels of the latent's samples, C' decoder width, F = 768, K = 32):
    tokens [N, C'] -> pixels -> feats [N, F] -> gaussian(feats, (sample, x, y, z)) -> raw
    [N, 14 K] -> ``to_samples`` -> one :class:`GaussianSet` per sample (n_b * K Gaussians, in
    the unit cube of the R^3 grid; R the Gaussian decoder's resolution, 64 official).

``atoken.Tokenizer.from_official(..., gaussian_decoder=...)`` builds it from the official
checkpoints (``decoder.out_layer.weight[:F]`` and ``3d_decode_gs.pt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.modalities.mesh.axes import latent_voxels
from atoken.modalities.mesh.gaussians import GaussianSet
from atoken.modalities.mesh.swin_decoder import SwinGaussianDecoder

__all__ = ["SWIN_GAUSSIANS", "SwinGaussianHead", "sample_coords"]

#: The registered name of :class:`SwinGaussianHead`.
SWIN_GAUSSIANS = "swin_gaussians"


def sample_coords(latent: SparseLatent) -> torch.Tensor:
    """The voxels of ``latent`` as ``int32 [N, 4] = (sample, x, y, z)`` (what the Gaussian
    decoder takes): each token's sample index, then its voxel index read in the axes its
    sample's meta records (:func:`~.axes.latent_voxels`)."""
    N = latent.coords.shape[0]
    samples = torch.arange(latent.batch_size, device=latent.coords.device)  # [B]
    index = torch.repeat_interleave(samples, latent.seqlens.to(samples.device))  # [N]
    coords = torch.empty(N, 4, dtype=torch.int32, device=latent.coords.device)  # [N, 4]
    coords[:, 0] = index[:N].to(torch.int32)
    coords[:, 1:] = latent_voxels(latent)  # [N, 3] (x, y, z)
    return coords


class SwinGaussianHead(nn.Module):
    """Decoder tokens -> the first F patch values -> the swin Gaussian decoder -> Gaussians.

    Args:
        width: decoder width C' (given by the factory).
        decoder: the :class:`SwinGaussianDecoder` arguments (``in_channels`` F, ``width``,
            ``depth``, ``heads``, ``mlp_hidden``, ``window``, ``gaussians_per_voxel``,
            ``resolution``, ``qk_norm``, ``scale_init``, ``scale_floor``); None: the
            official decoder's sizes.
        softcap: the Gaussian decoder's attention logit cap (30.0, the official flash-attn
            path) or None (its xformers path).
        bias: whether the patch layer has a bias (the official one has none).

    Raises:
        ConfigError: decoder arguments the Gaussian decoder does not take or reject.
    """

    #: The type of the samples :meth:`to_samples` returns (the contracts check it).
    sample_type = GaussianSet

    def __init__(
        self,
        *,
        width: int,
        decoder: Mapping[str, Any] | None = None,
        softcap: float | None = 30.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        options = dict(decoder or {})
        if not isinstance(width, int) or width < 1:
            raise ConfigError(f"{SWIN_GAUSSIANS}: width must be an int >= 1, got {width!r}")
        try:
            self.gaussian = SwinGaussianDecoder(**options, softcap=softcap)
        except TypeError as exc:
            raise ConfigError(f"{SWIN_GAUSSIANS}: decoder={options!r}: {exc}") from exc
        self.width = width
        self.pixels = nn.Linear(width, self.gaussian.in_channels, bias=bias)
        self._device = torch.device("cpu")  # where the Gaussian decoder's backend was chosen

    def _use_device_attention(self, device: torch.device) -> None:
        """The Gaussian decoder's packed backend follows the device (xformers on CUDA when
        it works, else SDPA), as the tokenizer's blocks do."""
        if device == self._device:
            return
        from atoken.core.attention import default_attention_backend
        from atoken.plugins.manager import get_registry

        name = default_attention_backend(device)
        self.gaussian.set_attention_fn(get_registry().attention_backends.create(name))
        self._device = device

    def forward(self, tokens: torch.Tensor, latent: SparseLatent) -> torch.Tensor:
        """tokens ``[N, C']`` of the samples of ``latent`` -> raw parameters ``[N, 14 K]``
        (the voxels of each sample attend to each other inside their windows)."""
        self._use_device_attention(tokens.device)
        feats = self.pixels(tokens)  # [N, F]: the patch's first F values, normalised
        return self.gaussian(feats, sample_coords(latent))  # [N, 14 K]

    def to_samples(
        self, prediction: torch.Tensor, latent: SparseLatent, modality: Any
    ) -> list[GaussianSet]:
        """Raw ``[N, 14 K]`` -> one :class:`GaussianSet` per sample of ``latent``.

        Raises:
            ModalityInputError: a sample whose voxel grid (``meta["resolution"]``) is not the
                Gaussian decoder's.
        """
        r = self.gaussian.resolution
        for b, meta in enumerate(latent.meta):
            got = meta.get("resolution", r) if isinstance(meta, Mapping) else r
            if int(got) != r:
                raise ModalityInputError(
                    f"{SWIN_GAUSSIANS}: sample {b} has a {got}^3 voxel grid; the Gaussian "
                    f"decoder places Gaussians in a {r}^3 grid (build the modality with "
                    f"resolution={r})"
                )
        sets = self.gaussian.to_gaussians(prediction, sample_coords(latent))
        return sets + [
            GaussianSet(
                means=prediction.new_zeros(0, 3),
                scales=prediction.new_zeros(0, 3),
                quats=prediction.new_zeros(0, 4),
                opacities=prediction.new_zeros(0),
                sh0=prediction.new_zeros(0, 3),
            )
            for _ in range(latent.batch_size - len(sets))
        ]  # trailing samples without voxels
