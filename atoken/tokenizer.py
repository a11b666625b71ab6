"""The AToken tokenizer: raw samples of any registered modality in, a sparse 4D latent out.

Shapes:
    B  samples, N tokens of all samples packed, C encoder width, L latent channels
    d  a modality's values per token (``value_dim``; 4 x 16 x 16 x 3 = 3072 for images/video)
    S  latent time steps per temporal tile (``config.tile_steps``, 4 = 16 frames)

The facade over the model: samples -> modality.patchify/normalize -> per-modality input (the
shared patch embedding, or the modality's own projection when its ``value_dim`` differs) ->
encoder -> bottleneck -> decoder -> per-modality head -> modality.denormalize/unpatchify.

    tok = Tokenizer.from_preset("tiny")
    latent = tok.encode(images)                      # SparseLatent, feats [N, L]
    recon = tok.decode(latent)                       # samples at native size
    emb = tok.embed(images)                          # [B, C] L2-normalised ([B, D] with text)
    mixed = tok.encode([img, clip, depth], modality=["image", "video", "depth"])

Everything modality-specific comes from the modality (content values, normalisation, whether
the 2D position table applies, its default head) and from the config (``modalities``,
``modality_params``, ``heads``, ``head_params``); this module names no modality. A sample
whose coordinates span more than ``tile_steps`` time steps is encoded tile by tile and decoded
tile by tile with the decoder's KV cache, so memory is bounded by one tile.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from atoken import _tiles, components
from atoken.core.attention import AttentionFn, default_attention_backend
from atoken.core.batch import PackedBatch
from atoken.core.components import BottleneckOutput
from atoken.core.config import TokenizerConfig, load_preset
from atoken.core.decoder import Decoder
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError, LatentValidationError, ModalityInputError
from atoken.core.kv_cache import KVCache, decode_with_cache
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.core.model import ATokenModel, ModelOutput
from atoken.core.model_size import check_model_size
from atoken.core.projection import ModalityProjections
from atoken.core.semantic import SemanticProjection
from atoken.core.siglip import encoder_config_from_timm, find_timm_trunk, load_timm_siglip
from atoken.core.tokens import DiscreteTokens
from atoken.plugins.manager import get_registry
from atoken.pretrained import load_pretrained, save_pretrained
from atoken.text import SharedTextEncoder, build_text_encoder

__all__ = ["Tokenizer", "default_attention_backend"]


class Tokenizer(ATokenModel):
    """The AToken tokenizer: encoder, MAP head, bottleneck, decoder and per-modality heads.

    Args:
        config: the :class:`~atoken.core.config.TokenizerConfig`.

    Modules:
        encoder, bottleneck, decoder: the backbone.
        projections: the own input projections of modalities whose ``value_dim`` differs
            from the encoder's patch dimension (:class:`ModalityProjections`).
        head: the shared head (``config.head``) of modalities that decode through it.
        heads: the own heads (``heads[name]``) of modalities with another head, other head
            parameters or another ``value_dim`` (their output projection).

    The attention backend is ``config.attention`` resolved through
    ``atoken.get_registry().attention_backends``, or, when None, the best one for the device the
    model is on (:func:`default_attention_backend`), chosen again when the device changes.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if not isinstance(config, TokenizerConfig):
            raise ConfigError(f"Tokenizer needs a TokenizerConfig, got {type(config).__name__}")
        if torch.get_default_device().type != "meta":  # a meta build allocates nothing
            check_model_size(config)  # a ConfigError naming the sizes, not the allocator's
        implicit = config.modalities is None
        names = tuple(get_registry().modalities.names()) if implicit else config.modalities
        self.config = attrs.evolve(config, modalities=names)
        enc = config.encoder
        self.encoder = Encoder(enc)
        self.projections = ModalityProjections(
            patch_dim=enc.patch_dim, width=enc.backbone.width, bias=enc.backbone.bias
        )
        self._modalities: dict[str, Modality] = {}
        self._attention: tuple[str, str] | None = None  # (device, backend name) in use
        self.bottleneck: nn.Module | None = None
        self.decoder: Decoder | None = None
        self.head: nn.Module | None = None
        self.heads = nn.ModuleDict()
        if config.decoder is not None:
            self.bottleneck = components.build_bottleneck(config)
            self.decoder = Decoder(
                config.decoder,
                latent_dim=self.bottleneck.latent_dim,
                final_norm=config.decoder_final_norm,
                pos_grid=enc.pos_grid if config.decoder_pos_table else None,
            )
            self.head = components.create_head(config, config.head, enc.patch_dim, None, {})
        self.semantic: SemanticProjection | None = None
        self._frozen_text = SharedTextEncoder(None)
        if config.text_encoder is not None:
            self._build_text(config)
        # Last, so the shared parameters initialise alike whatever plugins are installed.
        components.declare_modalities(self, implicit)

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
        (:meth:`TokenizerConfig.with_overrides`).

        Raises:
            ConfigError: an unknown preset or override, or weights that would not fit in this
                machine's memory (the message names the overridden size keys).
        """
        config = load_preset(name).with_overrides(**overrides)
        check_model_size(config, overrides=overrides, preset=name)
        return cls(config)

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

    @classmethod
    def from_official(cls, checkpoint: Any, config: Any = None, **options: Any) -> Tokenizer:
        """An official AToken checkpoint (``.pt`` read with ``weights_only=True``, or
        ``.safetensors``), mapped strictly; ``config``: its YAML or None, ``options``: ``heads``,
        ``decoder_heads``, ``fsq``, ``modalities`` (:func:`atoken.official.from_official`)."""
        from atoken.official.convert import from_official

        return from_official(cls, checkpoint, config, **options)

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

    # ------------------------------------------------------------------------ modalities
    def modality(self, name: str) -> Modality:
        """The registered modality ``name`` built for this tokenizer (cached): the encoder
        arguments it accepts plus ``config.modality_params[name]``.

        Raises:
            UnknownComponentError: for an unregistered modality.
            ConfigError: a modality that needs its own parameters (projection or head) but is
                not in ``config.modalities``, or a factory that rejects its arguments.
        """
        if not isinstance(name, str) or not name:
            raise ModalityInputError(f"modality must be a registered name, got {name!r}")
        if name not in self._modalities:
            mod = components.registered_modality(self.config, name)
            needs = components.needs_parameters(self.config, name, mod)
            if name not in self.config.modalities and needs:
                raise ConfigError(
                    f"modality {name!r} needs parameters of its own (a projection or a head) "
                    f"but this tokenizer was built for {list(self.config.modalities)}; build "
                    f"it with modalities=[..., {name!r}]"
                )
            self._modalities[name] = mod
        return self._modalities[name]

    def default_modality(self) -> str:
        """``config.default_modality``, else :data:`atoken.modalities.DEFAULT_MODALITY`."""
        return components.default_modality(self.config)

    # ------------------------------------------------------------------------ outputs
    def encode_features(
        self,
        samples: Any,
        modality: str | Sequence[str] | None = None,
        *,
        tile_steps: int | None = None,
    ) -> SparseLatent:
        """The encoder's final tokens (before any bottleneck): feats ``[N, C]``.

        ``tile_steps`` overrides ``config.tile_steps`` for this call.
        """
        self._resolve_attention()
        return _tiles.encode_samples(self, samples, modality, tile_steps)

    def embed(self, samples: Any, modality: str | Sequence[str] | None = None) -> torch.Tensor:
        """The L2-normalised semantic embedding per sample: the MAP head's ``[B, C]``, or, with a
        text encoder, that pooled embedding projected by W_s into the text space, ``[B, D]``.
        A clip longer than a tile is pooled over all its tiles' tokens."""
        return self.embed_features(self.encode_features(samples, modality))

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

    def forward(  # type: ignore[override]
        self, samples: Any, modality: str | Sequence[str] | None = None, **kwargs: Any
    ) -> torch.Tensor | ModelOutput:
        """``model(batch)`` with a :class:`PackedBatch` (from :meth:`prepare`) is the training
        step, :meth:`ATokenModel.forward` (keyword options ``sample``, ``decode``, ``embed``);
        with raw samples it is the same as :meth:`embed`."""
        if isinstance(samples, PackedBatch):
            self._resolve_attention()
            return super().forward(samples, **kwargs)
        return self.embed(samples, modality)

    # ------------------------------------------------------------------------ latent
    def _bottleneck(
        self,
        samples: Any,
        modality: str | Sequence[str] | None,
        sample: bool | None,
        tile_steps: int | None = None,
    ) -> tuple[SparseLatent, BottleneckOutput]:
        bottleneck, _, _ = self._require_decoder()
        features = self.encode_features(samples, modality, tile_steps=tile_steps)
        as_is = sample is None or getattr(bottleneck, "is_discrete", False)
        out = bottleneck(features.feats, **({} if as_is else {"sample": sample}))
        return features.replace(feats=out.latent), out

    def encode(
        self,
        samples: Any,
        modality: str | Sequence[str] | None = None,
        *,
        sample: bool | None = None,
        tile_steps: int | None = None,
    ) -> SparseLatent:
        """Samples -> the sparse latent: feats ``[N, latent_dim]`` with coords and metadata.

        Args:
            samples: a list of raw samples (or a batch tensor, or a :class:`SparseLatent` of
                raw values).
            modality: the registered modality of every sample, or one name per sample (a
                mixed batch); None: ``config.default_modality``.
            sample: a continuous (``kl``) latent is the posterior mean at inference and a
                sample in training; True/False forces either. A discrete one holds FSQ codes.
            tile_steps: latent time steps per tile for this call (default
                ``config.tile_steps``). A sample whose coordinates span more is encoded in
                tiles, each alone with its time re-based to 0; its meta records ``tile_steps``.
        """
        return self._bottleneck(samples, modality, sample, tile_steps)[0]

    def encode_with_ids(
        self, samples: Any, modality: str | Sequence[str] | None = None
    ) -> tuple[SparseLatent, torch.Tensor | None]:
        """One encoder pass giving both the latent (as :meth:`encode`) and, for a discrete
        bottleneck, its ids ``[N, G]`` (as :meth:`tokenize`); ids are None otherwise."""
        latent, out = self._bottleneck(samples, modality, None)
        return latent, out.ids

    def kv_cache(self, steps: int | None = None) -> KVCache:
        """A fresh KV cache of ``steps`` (default: the config's) for :meth:`decode_tile`."""
        return KVCache(self.config.kv_cache_steps if steps is None else steps)

    def decode(self, latent: SparseLatent, *, kv_cache_steps: int | None = None) -> list[Any]:
        """The latent back to samples, each by its modality's head (images ``[3, H, W]`` in
        [0, 1], unclamped; clips ``[3, T, H, W]``; a plugin's own form).

        A sample longer than its tile (``meta["tile_steps"]``, else ``config.tile_steps``) is
        decoded tile by tile with the KV cache of ``kv_cache_steps`` steps (default
        ``config.kv_cache_steps``; in training mode tiles are independent, as in the official
        training, so every tile gets its own gradients). A sample encoded piece by piece
        (its meta lists the ``tiles``) is decoded and joined piece by piece, so memory is
        bounded by a tile plus the output; other long samples hold their values once.

        Raises:
            ConfigError: no decoder, or a latent of the wrong width.
            LatentValidationError: ``latent`` is not a :class:`SparseLatent`.
        """
        _, decoder, _ = self._require_decoder()
        if not isinstance(latent, SparseLatent):
            raise LatentValidationError(
                "feats", f"decode takes a SparseLatent, got {type(latent).__name__}"
            )
        self._resolve_attention()
        weight = next(decoder.parameters())  # a stored float16/bfloat16 latent decodes as is
        latent = latent.to(weight.device, dtype=weight.dtype)
        if latent.batch_size == 0:
            return []
        steps = self.config.kv_cache_steps if kv_cache_steps is None else kv_cache_steps
        if self.training:
            steps = 0  # independent tiles: the cache's detached keys would cut gradients
        per_sample = torch.split(latent.coords, latent.seqlens.tolist())
        long = {}
        for b, coords in enumerate(per_sample):
            S = _tiles.tile_steps(self, latent.meta[b])
            if S is not None and _tiles.time_extent(coords) > S:
                long[b] = S
        pieces = {b for b in long if "tiles" in latent.meta[b]}
        if pieces:
            return _tiles.decode_with_pieces(self, latent, pieces, steps)
        if not long:
            tokens = decoder(latent.feats, latent.coords, latent.seqlens)  # [N, C]
        else:
            tokens = _tiles.decode_tokens_tiled(self, latent, long, steps)  # [N, C]
        return self._to_samples(tokens, latent)

    def decode_tile(
        self, latent: SparseLatent, cache: KVCache | None = None, *, steps: int | None = None
    ) -> list[Any]:
        """Decode one temporal tile: ``latent`` holds one sample whose time is re-based to the
        tile (t from 0) and whose meta describes the tile. With ``cache`` the tile also attends
        to the cached steps of the previous tiles and the cache is updated (for streaming,
        :mod:`atoken.tiling`). ``steps``: the tile's length in latent steps, by which the cache
        re-bases time (default: ``meta["tile_steps"]``, else ``config.tile_steps``, else the
        tile's time extent); pass the true length of a short last tile.

        Raises:
            ConfigError: no decoder.
            LatentValidationError: not a one-sample :class:`SparseLatent`.
        """
        _, decoder, _ = self._require_decoder()
        if not isinstance(latent, SparseLatent) or latent.batch_size != 1:
            got = latent.batch_size if isinstance(latent, SparseLatent) else type(latent).__name__
            raise LatentValidationError("seqlens", f"decode_tile takes one sample, got {got}")
        if steps is None:
            steps = _tiles.tile_steps(self, latent.meta[0])
        self._resolve_attention()
        latent = latent.to(self._device())
        tokens = decode_with_cache(decoder, latent.feats, latent.coords, cache, steps=steps)
        return self._to_samples(tokens, latent)

    def autoencode(
        self, samples: Any, modality: str | Sequence[str] | None = None
    ) -> tuple[list[Any], SparseLatent, BottleneckOutput]:
        """Encode and decode with gradients: ``(reconstructions, latent, bottleneck output)``.

        The training path: in training mode a continuous latent is sampled.
        """
        latent, out = self._bottleneck(samples, modality, None)
        return self.decode(latent), latent, out

    @torch.no_grad()
    def reconstruct(self, samples: Any, modality: str | Sequence[str] | None = None) -> list[Any]:
        """``decode(encode(samples))`` without gradients (tiled for long clips)."""
        return self.decode(self.encode(samples, modality))

    def _discrete(self) -> nn.Module:
        bottleneck, _, _ = self._require_decoder()
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
        latent, out = self._bottleneck(samples, modality, None)
        return DiscreteTokens.from_parts(out.ids, latent, sizes)

    def detokenize(self, tokens: DiscreteTokens) -> list[Any]:
        """Discrete ids back to samples (the inverse of :meth:`tokenize`)."""
        codes = self._discrete().ids_to_codes(tokens.ids.to(self._device()))  # [N, L]
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
