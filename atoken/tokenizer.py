"""The AToken tokenizer: raw samples in, packed features and semantic embeddings out.

Shapes:
    B  samples, N tokens of all samples packed, C encoder width
    P  values per token (4 x 16 x 16 x 3 = 3072 by default)

This module is the glue between the core (configs, encoder), the registries (modalities,
attention backends) and the presets. For now the tokenizer holds the encoder and its MAP head;
the bottleneck and decoder come with later issues.

    tok = Tokenizer.from_preset("tiny")
    feats = tok.encode_features(images)   # SparseLatent, feats [N, C]: final encoder tokens
    emb = tok.embed(images)               # [B, C], L2-normalised

Samples are whatever the modality accepts (images: [3, H, W] tensors in [0, 1], PIL images,
arrays, paths; a [B, 3, H, W] tensor counts as B images). The tokenizer normalises inputs itself
(``(v - input_mean) / input_std``, SigLIP2: 0.5 and 0.5) on the temporal slots a sample fills
(images fill slot 0; the other slots stay zero, as in the official release).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from atoken.core.attention import AttentionFn, default_attention_backend
from atoken.core.config import TokenizerConfig, load_preset
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.core.siglip import encoder_config_from_timm, find_timm_trunk, load_timm_siglip
from atoken.plugins.manager import get_registry

__all__ = ["Tokenizer", "default_attention_backend"]

#: Temporal slots that hold content, per modality (the others are zero padding). Modalities
#: not listed fill every slot of their tubelets.
CONTENT_SLOTS: dict[str, int] = {"image": 1}


class Tokenizer(nn.Module):
    """The AToken tokenizer (encoder and MAP head for now).

    Args:
        config: the :class:`~atoken.core.config.TokenizerConfig`.

    The attention backend is ``config.attention`` resolved through
    ``atoken.get_registry().attention_backends``, or, when None, the best one for the device the
    model is on (:func:`default_attention_backend`), chosen again when the device changes.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if not isinstance(config, TokenizerConfig):
            raise ConfigError(f"Tokenizer needs a TokenizerConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config.encoder)
        mean = torch.tensor(config.input_mean, dtype=torch.float32)  # [c]
        std = torch.tensor(config.input_std, dtype=torch.float32)  # [c]
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        self._modalities: dict[str, Modality] = {}
        self._attention: tuple[str, str] | None = None  # (device, backend name) in use

    # ------------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: TokenizerConfig) -> Tokenizer:
        """A freshly initialised tokenizer for ``config``."""
        return cls(config)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Tokenizer:
        """A freshly initialised tokenizer from a bundled preset (``tiny``, ``small``, ``base``,
        ``so400m``, ``atoken-so``) with flat overrides
        (:meth:`TokenizerConfig.with_overrides`)."""
        return cls(load_preset(name).with_overrides(**overrides))

    @classmethod
    def from_open_clip(cls, model: nn.Module, **overrides: Any) -> Tokenizer:
        """A tokenizer whose encoder, position table and MAP head carry the vision weights of an
        open_clip SigLIP/SigLIP2 model (its timm trunk; ``model.visual`` or the trunk also work).

        The encoder's shape, activation and norm epsilon come from the trunk; RoPE defaults to
        the official setting (pass ``rope=False`` for the plain SigLIP2 network). Input
        normalisation is SigLIP2's mean 0.5, std 0.5 (open_clip's ``preprocess_cfg`` is not
        read: it shows OpenAI values for models built without pretrained weights). Weights are
        never downloaded: build ``model`` from a local checkpoint or cache.

        Raises:
            ConfigError: for a trunk the encoder cannot represent or an unknown override.
        """
        trunk = find_timm_trunk(model)
        encoder = encoder_config_from_timm(trunk)
        config = TokenizerConfig(name="open_clip", encoder=encoder).with_overrides(**overrides)
        tokenizer = cls(config)
        load_timm_siglip(tokenizer.encoder, trunk)
        first = next(trunk.parameters())
        return tokenizer.to(first.device)

    # ------------------------------------------------------------------------ attention
    @property
    def attention_backend(self) -> str:
        """The name of the backend for the model's current device."""
        return self.config.attention or default_attention_backend(self._device())

    def set_attention_backend(self, name: str | None) -> None:
        """Use the registered backend ``name`` (None: pick by device) from the next call.

        Raises:
            UnknownComponentError: for a name no plugin registered.
        """
        if name is not None:
            get_registry().attention_backends.get(name)  # fail now, with close matches
        self.config = self.config.with_overrides(attention=name)
        self._attention = None

    def _resolve_attention(self) -> None:
        device = self._device()
        name = self.attention_backend
        key = (str(device), name)
        if self._attention != key:
            fn: AttentionFn = get_registry().attention_backends.create(name)
            self.encoder.set_attention_fn(fn)
            self._attention = key

    def _device(self) -> torch.device:
        return self.encoder.patch_embed.proj.weight.device

    # ------------------------------------------------------------------------ inputs
    def modality(self, name: str) -> Modality:
        """The registered modality ``name`` built for this tokenizer's patch size (cached).

        Raises:
            UnknownComponentError: for an unregistered modality.
            ConfigError: when its values do not fit the patch embedding.
        """
        if name not in self._modalities:
            enc = self.config.encoder
            mod = get_registry().modalities.create(
                name, patch_size=enc.patch_size, temporal_patch=enc.temporal_patch
            )
            if mod.value_dim != enc.patch_dim:
                raise ConfigError(
                    f"modality {name!r} gives {mod.value_dim} values per token but the patch "
                    f"embedding takes {enc.patch_dim}"
                )
            self._modalities[name] = mod
        return self._modalities[name]

    def pack(self, samples: Any, modality: str = "image") -> SparseLatent:
        """Patchify, pack and normalise ``samples``: feats are normalised values ``[N, P]`` on
        the model's device. A :class:`SparseLatent` of raw values is normalised as is."""
        if isinstance(samples, SparseLatent):
            latent = samples
        else:
            if isinstance(samples, torch.Tensor):
                if samples.ndim != 4:
                    raise ModalityInputError(
                        f"a tensor batch must be [B, C, H, W], got {tuple(samples.shape)}; "
                        "pass a list for single samples"
                    )
                samples = list(samples.unbind(0))
            if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
                raise ModalityInputError(
                    "samples must be a list (or a [B, C, H, W] tensor), "
                    f"got {type(samples).__name__}"
                )
            latent = self.modality(modality).pack(samples)
        latent = latent.to(self._device())
        return latent.replace(feats=self._normalize(latent))

    def _normalize(self, latent: SparseLatent) -> torch.Tensor:
        enc = self.config.encoder
        N = latent.num_tokens
        pt, c = enc.temporal_patch, enc.in_channels
        values = latent.feats.float().reshape(N, pt, -1, c)  # [N, pt, p*p, c]
        normed = (values - self.input_mean) / self.input_std  # [N, pt, p*p, c]
        filled = [CONTENT_SLOTS.get(m, pt) for m in latent.modality]  # [B]
        if all(f >= pt for f in filled):
            return normed.reshape(N, -1)
        per_token = torch.repeat_interleave(
            torch.tensor(filled, device=values.device), latent.seqlens.to(values.device)
        )  # [N]
        slot = torch.arange(pt, device=values.device)  # [pt]
        content = (slot[None] < per_token[:, None])[:, :, None, None]  # [N, pt, 1, 1]
        return torch.where(content, normed, values).reshape(N, -1)  # padding slots stay as given

    # ------------------------------------------------------------------------ outputs
    def encode_features(self, samples: Any, modality: str = "image") -> SparseLatent:
        """The encoder's final tokens (before any bottleneck): feats ``[N, C]``."""
        self._resolve_attention()
        return self.encoder.encode(self.pack(samples, modality))

    def embed(self, samples: Any, modality: str = "image") -> torch.Tensor:
        """The MAP head's L2-normalised semantic embedding per sample: ``[B, C]``."""
        features = self.encode_features(samples, modality)
        return self.encoder.pool(features.feats, features.seqlens)

    def forward(self, samples: Any, modality: str = "image") -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(samples, modality)
