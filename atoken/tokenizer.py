"""The AToken tokenizer: raw samples of any modality it was built for in, a sparse 4D latent out.

Shapes:
    B  samples, N tokens of all samples packed, C encoder width, L latent channels
    d  a modality's values per token (``value_dim``; 4 x 16 x 16 x 3 = 3072 for images/video)

    tok = Tokenizer.from_preset("tiny")              # eval mode: encode is repeatable
    latent = tok.encode(images)                      # SparseLatent, feats [N, L]
    recon = tok.decode(latent)                       # samples at native size
    emb = tok.embed(images)                          # [B, C] L2-normalised ([B, D] with text)
    mixed = tok.encode([img, clip], modality=["image", "video"])

:class:`Tokenizer` is the facade over :class:`~atoken.core.model.ATokenModel`, which holds the
parts and the whole encode/decode path (tiling of long samples included). The facade adds the
constructors (through the composition root, :mod:`atoken.factory`), persistence, the text
encoder and discrete tokens. It names no modality.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.attention import default_attention_backend
from atoken.core.config import TokenizerConfig
from atoken.core.errors import ConfigError
from atoken.core.latent import SparseLatent
from atoken.core.model import ATokenModel
from atoken.core.model_size import check_model_size
from atoken.core.siglip import encoder_config_from_timm, find_timm_trunk, load_timm_siglip
from atoken.core.tokens import DiscreteTokens
from atoken.factory import build_parts, resolve_config
from atoken.pretrained import load_pretrained, save_pretrained
from atoken.text import SharedTextEncoder

__all__ = ["Tokenizer", "create_tokenizer", "default_attention_backend"]


class Tokenizer(ATokenModel):
    """The AToken tokenizer: encoder, MAP head, bottleneck, decoder and per-modality heads.

    Args:
        config: the :class:`~atoken.core.config.TokenizerConfig`; its ``modalities`` are the
            ones built (None: the modalities atoken ships,
            :func:`atoken.factory.builtin_modalities`).

    Modules:
        encoder, bottleneck, decoder: the backbone.
        projections: the own input projections of modalities that do not share the RGB
            patch path (``Modality.shared_pixel_path``).
        head: the shared head (``config.head``) of modalities that decode through it.
        heads: the own heads (``heads[name]``) of modalities with another head, other head
            parameters or another ``value_dim``.

    A tokenizer built directly is in training mode (as any ``nn.Module``); the ``from_*``
    constructors and :func:`atoken.create_tokenizer` return it in eval mode.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        if not isinstance(config, TokenizerConfig):
            raise ConfigError(f"Tokenizer needs a TokenizerConfig, got {type(config).__name__}")
        if torch.get_default_device().type != "meta":  # a meta build allocates nothing
            check_model_size(config)  # a ConfigError naming the sizes, not the allocator's
        parts = build_parts(config)
        super().__init__(**parts.model_kwargs())
        self._frozen_text = SharedTextEncoder(None)
        if parts.text_tower is not None:
            self.text_tower = parts.text_tower  # trainable: trained and saved with the model
        else:
            self._frozen_text = SharedTextEncoder(parts.text)  # shared, never copied

    # ------------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: TokenizerConfig) -> Tokenizer:
        """A freshly initialised tokenizer for ``config``, in eval mode."""
        return cls(config).eval()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Tokenizer:
        """A freshly initialised tokenizer from a bundled preset (``tiny``, ``small``, ``base``,
        ``so400m``, ``atoken-so``; each names its modalities) with flat overrides
        (:meth:`TokenizerConfig.with_overrides`, ``modalities=[...]`` included), in eval mode.

        Raises:
            ConfigError: an unknown preset or override, or weights that would not fit in this
                machine's memory (the message names the overridden size keys).
        """
        return cls(resolve_config(name, **overrides)).eval()

    @classmethod
    def from_open_clip(cls, model: nn.Module, **overrides: Any) -> Tokenizer:
        """A tokenizer whose encoder, position table and MAP head carry the vision weights of an
        open_clip SigLIP/SigLIP2 model (its timm trunk; ``model.visual`` or the trunk also work),
        in eval mode.

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
        return tokenizer.to(first.device).eval()

    @classmethod
    def from_official(cls, checkpoint: Any, config: Any = None, **options: Any) -> Tokenizer:
        """An official AToken checkpoint (``.pt`` read with ``weights_only=True``, or
        ``.safetensors``), mapped strictly, in eval mode; ``config``: its YAML or None,
        ``options``: ``heads``, ``decoder_heads``, ``fsq``, ``modalities``, ``text_tower``,
        and ``gaussian_decoder`` (``3d_decode_gs.pt`` or its converted folder, with
        ``gaussian_config``, its YAML): a 3D latent then decodes to the official decoder's
        Gaussians (:func:`atoken.official.from_official`)."""
        from atoken.official.convert import from_official

        return from_official(cls, checkpoint, config, **options).eval()

    # ------------------------------------------------------------------------ text
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
        return F.normalize(encoder.encode(texts, device=self.device).float(), dim=-1)

    # ------------------------------------------------------------------------ discrete tokens
    def _discrete(self) -> nn.Module:
        bottleneck, _, _ = self.require_decoder()
        if not hasattr(bottleneck, "ids_to_codes"):
            raise ConfigError(
                f"bottleneck {self.config.bottleneck!r} is continuous: tokens need a discrete "
                "one (e.g. bottleneck='fsq')"
            )
        return bottleneck

    def tokenize(self, samples: Any, modality: str | Sequence[str] | None = None) -> DiscreteTokens:
        """Samples -> ids ``[N, G]`` with coords, sample lengths, metadata and each group's
        codebook size (:class:`DiscreteTokens`). Raises ConfigError: a continuous bottleneck."""
        sizes = getattr(self._discrete(), "codebook_sizes", ())
        latent, ids = self.encode_with_ids(samples, modality)
        return DiscreteTokens.from_parts(ids, latent, sizes)

    def detokenize(self, tokens: DiscreteTokens) -> list[Any]:
        """Discrete ids back to samples (the inverse of :meth:`tokenize`)."""
        codes = self._discrete().ids_to_codes(tokens.ids.to(self.device))  # [N, L]
        latent = SparseLatent(
            codes,
            tokens.coords.to(self.device),
            tokens.seqlens,
            modality=tokens.modality,
            meta=tokens.meta,
            validate=False,
        )
        return self.decode(latent)

    # ------------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` (with the modalities and the plugins that provide them) and
        ``model.safetensors`` to ``folder`` (created if needed)."""
        return save_pretrained(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **overrides: Any) -> Tokenizer:
        """Load a tokenizer written by :meth:`save_pretrained` (safetensors: nothing is
        unpickled), in eval mode, with the modalities it was saved with. ``overrides`` that
        change no weight shape (e.g. ``attention``) apply; ``modalities=[...]`` leaves saved
        ones out or adds new ones with fresh parameters.

        Raises:
            CheckpointError: a missing or unreadable file, weights of a different config, or a
                saved modality whose plugin is not installed (the message names the plugin).
        """
        return load_pretrained(cls, folder, **overrides).eval()


def create_tokenizer(
    source: str | os.PathLike | TokenizerConfig,
    *,
    modalities: list[str] | tuple[str, ...] | None = None,
    **overrides: Any,
) -> Any:
    """The one place a name becomes a tokenizer, in eval mode (call ``.train()`` to fine-tune).

    Args:
        source: a preset name (``tiny``, ``small``, ``base``, ``so400m``, ``atoken-so``), a
            :class:`TokenizerConfig`, or a folder :meth:`Tokenizer.save_pretrained` wrote
            (its weights load; ``overrides`` may change no weight shape).
        modalities: the modalities to build (replaces the preset's or the folder's list; a
            plugin's modality is added by name: ``["image", "video", "pointcloud"]``).
        overrides: flat :class:`TokenizerConfig` keys over the source's.

    Raises:
        ConfigError: an unknown preset or key; UnknownComponentError: a name no installed
            plugin registers; CheckpointError: a folder that does not load.
    """
    if modalities is not None:
        overrides["modalities"] = tuple(modalities)
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        return Tokenizer.from_pretrained(source, **overrides)
    return Tokenizer(resolve_config(source, **overrides)).eval()
