"""The AToken tokenizer: raw samples in, packed features and semantic embeddings out.

Shapes:
    B  samples, N tokens of all samples packed, C encoder width
    P  values per token (4 x 16 x 16 x 3 = 3072 by default)

This module is the glue between the core (configs, encoder), the registries (modalities,
attention backends) and the presets. For now the tokenizer holds the encoder and its MAP head;
the bottleneck and decoder come with later issues.

    tok = Tokenizer.from_preset("tiny")
    feats = tok.encode_features(images)   # SparseLatent, feats [N, C]: final encoder tokens
    emb = tok.embed(images)               # [B, C], L2-normalised ([B, D] with a text encoder)
    txt = tok.embed_text(["a cat"])       # [T, D], L2-normalised (needs config.text_encoder)

Samples are whatever the modality accepts (images: [3, H, W] tensors in [0, 1], PIL images,
arrays, paths; a [B, 3, H, W] tensor counts as B images). The tokenizer normalises inputs itself
(``(v - input_mean) / input_std``, SigLIP2: 0.5 and 0.5) on the temporal slots a sample fills
(images fill slot 0; the other slots stay zero, as in the official release).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.attention import AttentionFn, default_attention_backend
from atoken.core.components import BottleneckOutput
from atoken.core.config import TokenizerConfig, load_preset
from atoken.core.decoder import Decoder
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.core.semantic import SemanticProjection
from atoken.core.siglip import encoder_config_from_timm, find_timm_trunk, load_timm_siglip
from atoken.core.tokens import DiscreteTokens
from atoken.plugins.manager import get_registry
from atoken.pretrained import load_pretrained, save_pretrained
from atoken.text import SharedTextEncoder, build_text_encoder

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
        self.bottleneck: nn.Module | None = None
        self.decoder: Decoder | None = None
        self.head: nn.Module | None = None
        if config.decoder is not None:
            self.bottleneck = _build_bottleneck(config)
            self.decoder = Decoder(
                config.decoder,
                latent_dim=self.bottleneck.latent_dim,
                final_norm=config.decoder_final_norm,
            )
            self.head = get_registry().heads.create(
                config.head,
                width=config.decoder.width,
                value_dim=config.encoder.patch_dim,
                bias=config.decoder.bias,
            )
        self.semantic: SemanticProjection | None = None
        self._frozen_text = SharedTextEncoder(None)
        if config.text_encoder is not None:
            self._build_text(config)

    def _build_text(self, config: TokenizerConfig) -> None:
        if not config.encoder.map_head:
            raise ConfigError("a text encoder needs the MAP head (encoder.map_head=True)")
        text = build_text_encoder(config.text_encoder, config.text_encoder_params)
        self.semantic = SemanticProjection(config.encoder.backbone.width, text.dim)
        if text.trainable:
            self.text_tower = text.load()  # a submodule with its weights: trained and saved
        else:
            self._frozen_text = SharedTextEncoder(text)

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
            if self.decoder is not None:
                self.decoder.set_attention_fn(fn)
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
            mod = self.modality(modality)
            nd = mod.sample_ndim
            batch = {3: "[B, C, H, W]", 4: "[B, C, T, H, W]"}.get(nd, f"{nd + 1}-D")
            if isinstance(samples, torch.Tensor):
                if samples.ndim != nd + 1:
                    one = " (one sample x: pass [x])" if samples.ndim == nd else ""
                    raise ModalityInputError(
                        f"a {modality} tensor batch must be {batch}, got "
                        f"{tuple(samples.shape)}; pass a list for single samples{one}"
                    )
                samples = list(samples.unbind(0))
            if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
                raise ModalityInputError(
                    f"samples must be a list (or a {batch} tensor), got {type(samples).__name__}"
                )
            latent = mod.pack(samples)
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
        """The L2-normalised semantic embedding per sample: the MAP head's ``[B, C]``, or, with a
        text encoder, that pooled embedding projected by W_s into the text space, ``[B, D]``."""
        return self.embed_features(self.encode_features(samples, modality))

    def embed_features(self, features: SparseLatent) -> torch.Tensor:
        """:meth:`embed` from the encoder's final tokens (one encoder pass for both paths)."""
        if self.semantic is None:
            return self.encoder.pool(features.feats, features.seqlens)
        pooled = self.encoder.head(features.feats, features.seqlens, normalize=False)  # [B, C]
        return self.semantic(pooled)  # [B, D]

    @property
    def text_encoder(self) -> Any:
        """The text encoder named by ``config.text_encoder`` (None without one)."""
        tower = self._modules.get("text_tower")
        return tower if tower is not None else self._frozen_text.value

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> L2-normalised embeddings ``[T, D]`` in the space :meth:`embed` maps into.

        Raises:
            ConfigError: the tokenizer has no text encoder.
            ModalityInputError: ``texts`` is not a list of str.
        """
        encoder = self.text_encoder
        if encoder is None:
            raise ConfigError(
                "this tokenizer has no text encoder: build it with text_encoder='minilm' "
                "(or another registered text encoder)"
            )
        return F.normalize(encoder.encode(texts, device=self._device()).float(), dim=-1)

    def forward(self, samples: Any, modality: str = "image") -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(samples, modality)

    # ------------------------------------------------------------------------ latent
    def _require_decoder(self) -> tuple[nn.Module, Decoder, nn.Module]:
        if self.bottleneck is None or self.decoder is None or self.head is None:
            raise ConfigError("this tokenizer has no decoder (config.decoder is None)")
        return self.bottleneck, self.decoder, self.head

    def _bottleneck(
        self, samples: Any, modality: str, sample: bool | None
    ) -> tuple[SparseLatent, BottleneckOutput]:
        bottleneck, _, _ = self._require_decoder()
        features = self.encode_features(samples, modality)
        kwargs = (
            {}
            if sample is None or getattr(bottleneck, "is_discrete", False)
            else {"sample": sample}
        )
        out = bottleneck(features.feats, **kwargs)
        return features.replace(feats=out.latent), out

    def encode(
        self, samples: Any, modality: str = "image", *, sample: bool | None = None
    ) -> SparseLatent:
        """Samples -> the sparse latent: feats ``[N, latent_dim]`` with coords and metadata.

        A continuous (``kl``) latent is the posterior mean at inference and a sample in training
        (``sample=True``/``False`` forces either); a discrete one holds the FSQ codes.
        """
        return self._bottleneck(samples, modality, sample)[0]

    def encode_with_ids(
        self, samples: Any, modality: str = "image"
    ) -> tuple[SparseLatent, torch.Tensor | None]:
        """One encoder pass giving both the latent (as :meth:`encode`) and, for a discrete
        bottleneck, its ids ``[N, G]`` (as :meth:`tokenize`); ids are None otherwise."""
        latent, out = self._bottleneck(samples, modality, None)
        return latent, out.ids

    def decode(self, latent: SparseLatent) -> list[Any]:
        """The latent back to samples (images ``[3, H, W]`` in [0, 1], unclamped)."""
        _, decoder, head = self._require_decoder()
        self._resolve_attention()
        latent = latent.to(self._device())
        tokens = decoder(latent.feats, latent.coords, latent.seqlens)  # [N, C]
        enc = self.config.encoder
        pt = enc.temporal_patch
        # Predict only the temporal slots the samples fill (images: slot 0 of 4): exact, and
        # a quarter of the head's work and memory for image batches.
        slots = max((CONTENT_SLOTS.get(m, pt) for m in latent.modality), default=pt)
        if slots < pt and getattr(head, "partial_values", False):
            values = head(tokens, num_values=slots * enc.patch_dim // pt)  # [N, slots*p*p*c]
        else:
            slots, values = pt, head(tokens)  # [N, P]
        values = self._denormalize(values.float(), slots)
        out: list[Any] = []
        for part in latent.replace(feats=values).unpack():
            mod = self._output_modality(part.modality[0], slots)
            out.append(mod.unpatchify(part.feats, part.coords, part.meta[0]))
        return out

    def _output_modality(self, name: str, slots: int) -> Modality:
        if slots == self.config.encoder.temporal_patch:
            return self.modality(name)
        key = f"{name}@{slots}"
        if key not in self._modalities:
            enc = self.config.encoder
            self._modalities[key] = get_registry().modalities.create(
                name, patch_size=enc.patch_size, temporal_patch=slots
            )
        return self._modalities[key]

    def _denormalize(self, values: torch.Tensor, slots: int) -> torch.Tensor:
        N = values.shape[0]
        v = values.reshape(N, slots, -1, self.config.encoder.in_channels)  # [N, slots, p*p, c]
        return (v * self.input_std + self.input_mean).reshape(N, -1)  # [N, slots*p*p*c]

    def autoencode(
        self, samples: Any, modality: str = "image"
    ) -> tuple[list[Any], SparseLatent, BottleneckOutput]:
        """Encode and decode with gradients: ``(reconstructions, latent, bottleneck output)``.

        The training path: in training mode a continuous latent is sampled.
        """
        latent, out = self._bottleneck(samples, modality, None)
        return self.decode(latent), latent, out

    @torch.no_grad()
    def reconstruct(self, samples: Any, modality: str = "image") -> list[Any]:
        """``decode(encode(samples))`` without gradients."""
        return self.decode(self.encode(samples, modality))

    def tokenize(self, samples: Any, modality: str = "image") -> DiscreteTokens:
        """Samples -> discrete ids ``[N, G]`` with coords and metadata (FSQ tokenizers only).

        Raises:
            ConfigError: for a continuous bottleneck.
        """
        bottleneck, _, _ = self._require_decoder()
        if not hasattr(bottleneck, "ids_to_codes"):
            raise ConfigError(
                f"bottleneck {self.config.bottleneck!r} is continuous: tokenize needs a discrete "
                "one (e.g. bottleneck='fsq')"
            )
        latent, out = self._bottleneck(samples, modality, None)
        return DiscreteTokens.from_parts(out.ids, latent)

    def detokenize(self, tokens: DiscreteTokens) -> list[Any]:
        """Discrete ids back to samples."""
        bottleneck, _, _ = self._require_decoder()
        if not hasattr(bottleneck, "ids_to_codes"):
            raise ConfigError(f"bottleneck {self.config.bottleneck!r} has no ids to decode")
        codes = bottleneck.ids_to_codes(tokens.ids.to(self._device()))  # [N, L]
        latent = SparseLatent(
            codes,
            tokens.coords.to(self._device()),
            tokens.seqlens,
            modality=tokens.modality,
            meta=tokens.meta,
            validate=False,
        )
        return self.decode(latent)

    # ------------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``folder`` (created if needed)."""
        return save_pretrained(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **overrides: Any) -> Tokenizer:
        """Load a tokenizer written by :meth:`save_pretrained` (safetensors: nothing is
        unpickled). ``overrides`` that change no weight shape (e.g. ``attention``) apply.

        Raises:
            CheckpointError: a missing or unreadable file, or weights of a different config.
        """
        return load_pretrained(cls, folder, **overrides)


def _build_bottleneck(config: TokenizerConfig) -> nn.Module:
    """The registered bottleneck, given ``in_dim`` and (if it takes it) ``latent_dim``."""
    factory = get_registry().bottlenecks.get(config.bottleneck)
    params = {"in_dim": config.encoder.backbone.width, **dict(config.bottleneck_params)}
    accepts = inspect.signature(factory).parameters
    if "latent_dim" in accepts and "latent_dim" not in params:
        params["latent_dim"] = config.latent_dim
    bottleneck = factory(**params)
    if bottleneck.latent_dim != config.latent_dim:
        raise ConfigError(
            f"bottleneck {config.bottleneck!r} with {dict(config.bottleneck_params)} gives a "
            f"{bottleneck.latent_dim}-channel latent but latent_dim is {config.latent_dim}; "
            f"set latent_dim={bottleneck.latent_dim}"
        )
    return bottleneck
