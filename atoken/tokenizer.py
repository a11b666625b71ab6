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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from atoken import _tiles, components
from atoken.core.attention import AttentionFn, default_attention_backend
from atoken.core.batch import PackedBatch, PackedGroup
from atoken.core.components import BottleneckOutput
from atoken.core.config import TokenizerConfig, load_preset
from atoken.core.decoder import Decoder
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError, LatentValidationError, ModalityInputError
from atoken.core.kv_cache import KVCache, decode_with_cache
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality, build_modality
from atoken.core.model import ATokenModel, ModelOutput
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

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if not isinstance(config, TokenizerConfig):
            raise ConfigError(f"Tokenizer needs a TokenizerConfig, got {type(config).__name__}")
        implicit = config.modalities is None
        names = tuple(get_registry().modalities.names()) if implicit else config.modalities
        self.config = attrs.evolve(config, modalities=names)
        enc = config.encoder
        self.encoder = Encoder(enc)
        mean = torch.tensor(config.input_mean, dtype=torch.float32)  # [c]
        std = torch.tensor(config.input_std, dtype=torch.float32)  # [c]
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
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
            )
            self.head = components.create_head(config, config.head, enc.patch_dim, None, {})
        self.semantic: SemanticProjection | None = None
        self._frozen_text = SharedTextEncoder(None)
        if config.text_encoder is not None:
            self._build_text(config)
        # Last, so the shared parameters initialise alike whatever plugins are installed.
        self._declare_all(implicit)

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
            mod = self._build_modality(name)
            needs = components.needs_parameters(self.config, name, mod)
            if name not in self.config.modalities and needs:
                raise ConfigError(
                    f"modality {name!r} needs parameters of its own (a projection or a head) "
                    f"but this tokenizer was built for {list(self.config.modalities)}; build "
                    f"it with modalities=[..., {name!r}]"
                )
            self._modalities[name] = mod
        return self._modalities[name]

    @classmethod
    def parameter_free_modalities(cls, config: TokenizerConfig) -> tuple[str, ...]:
        """The registered modalities that use only shared parameters under ``config``
        (:func:`atoken.components.parameter_free_modalities`)."""
        return components.parameter_free_modalities(config)

    def _build_modality(self, name: str) -> Modality:
        entry = get_registry().modalities.entry(name)
        params = self.config.modality_params.get(name)
        return build_modality(name, entry.factory, self.config, params, plugin=entry.plugin)

    def _declare_all(self, implicit: bool) -> None:
        """Build every modality of ``config.modalities`` and its own parameters. With an
        implicit list (every registered modality), one whose factory fails is left out with a
        warning naming its plugin, so one broken plugin does not stop every tokenizer (unless
        the config gives it parameters or a head: then the error is the user's to see)."""
        components.check_modality_keys(self.config)
        kept = []
        for name in self.config.modalities:
            try:
                self._declare(name)
            except ConfigError as exc:
                cfg = self.config
                named = name in cfg.modality_params or name in cfg.heads or name in cfg.head_params
                if not implicit or named:  # the user asked for it: their config is wrong
                    raise
                warnings.warn(f"modality {name!r} left out of the tokenizer: {exc}", stacklevel=3)
                continue
            kept.append(name)
        if len(kept) != len(self.config.modalities):
            self.config = attrs.evolve(self.config, modalities=tuple(kept))

    def _declare(self, name: str) -> None:
        """Build modality ``name`` and the parameters it needs (projection, own head)."""
        mod = self.modality(name)
        if components.needs_parameters(self.config, name, mod):
            components.check_parameter_name(name)
        self.projections.add(name, mod.value_dim)
        if components.own_head(self.config, name, mod):
            head_name, params = components.head_choice(self.config, name, mod)
            self.heads[name] = components.create_head(
                self.config, head_name, mod.value_dim, mod, params
            )

    # ------------------------------------------------------------------------ inputs
    def _names(self, samples: Any, modality: str | Sequence[str] | None, count: int) -> list[str]:
        if modality is None:
            modality = components.default_modality(self.config)
        if isinstance(modality, str):
            return [modality] * count
        if not isinstance(modality, Sequence) or not all(isinstance(m, str) for m in modality):
            raise ModalityInputError(
                f"modality must be a name or one name per sample, got {modality!r}"
            )
        names = list(modality)
        if len(names) != count:
            raise ModalityInputError(f"{len(names)} modality names for {count} samples")
        return names

    def _as_list(self, samples: Any, modality: str | Sequence[str] | None) -> list[Any]:
        """Raw samples as a list: a tensor with one more dimension than the modality's samples
        is a batch."""
        if isinstance(samples, torch.Tensor):
            names = set(self._names(samples, modality, samples.shape[0] if samples.ndim else 1))
            if len(names) != 1:
                raise ModalityInputError("a tensor batch holds samples of one modality")
            mod = self.modality(names.pop())
            nd = mod.sample_ndim
            if samples.ndim != nd + 1:
                shapes = {2: "[B, H, W]", 3: "[B, C, H, W]", 4: "[B, C, T, H, W]"}
                batch = shapes.get(nd) if mod.layout == "thw" else None
                batch = batch or f"{nd + 1}-D [B, ...]"
                one = " (one sample x: pass [x])" if samples.ndim == nd else ""
                raise ModalityInputError(
                    f"a {mod.name} tensor batch must be {batch}, got "
                    f"{tuple(samples.shape)}; pass a list for single samples{one}"
                )
            return list(samples.unbind(0))
        if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
            raise ModalityInputError(
                f"samples must be a list (or a batch tensor), got {type(samples).__name__}"
            )
        return list(samples)

    def _prepare(self, samples: Any, modality: str | Sequence[str] | None) -> PackedBatch:
        """Patchify and normalise ``samples`` into per-modality groups on the model's device.
        A :class:`SparseLatent` of raw values keeps its own modality names.

        Raises:
            ModalityInputError: ``modality`` names other modalities than the latent's.
        """
        device = self._device()
        if isinstance(samples, SparseLatent):
            latent = samples.to(device)
            if modality is not None:
                given = self._names(latent, modality, latent.batch_size)
                if tuple(given) != latent.modality:
                    raise ModalityInputError(
                        f"modality={modality!r} but the latent's samples are {latent.modality}"
                    )
            groups = []
            for name in dict.fromkeys(latent.modality):
                idx = [b for b, m in enumerate(latent.modality) if m == name]
                part = latent.select(idx) if len(idx) != latent.batch_size else latent
                mod = self.modality(name)
                mod.check_values(part.feats)
                groups.append(
                    PackedGroup(name, tuple(idx), part.replace(feats=mod.normalize(part.feats)))
                )
            return PackedBatch.from_groups(groups)
        samples = self._as_list(samples, modality)
        names = self._names(samples, modality, len(samples))
        groups = []
        for name in dict.fromkeys(names):
            idx = tuple(b for b, m in enumerate(names) if m == name)
            mod = self.modality(name)
            raw = mod.pack([samples[b] for b in idx]).to(device)
            groups.append(PackedGroup(name, idx, raw.replace(feats=mod.normalize(raw.feats))))
        return PackedBatch.from_groups(groups)

    def pack(self, samples: Any, modality: str | None = None) -> SparseLatent:
        """Patchify, pack and normalise samples of one value size: feats are the normalised
        values ``[N, d]`` on the model's device. A :class:`SparseLatent` of raw values is
        normalised as is.

        Raises:
            ConfigError: the samples' modalities have different value sizes (encode them
                instead: a mixed batch has no single value tensor).
        """
        batch = self._prepare(samples, modality)
        if not batch.groups:
            return SparseLatent(
                torch.zeros(0, self.config.encoder.patch_dim, device=self._device()),
                torch.zeros(0, 4, dtype=torch.int32, device=self._device()),
                torch.zeros(0, dtype=torch.int64),
            )
        dims = {g.values.channels for g in batch.groups}
        if len(dims) > 1:
            raise ConfigError(f"pack: the samples' value sizes differ ({sorted(dims)})")
        return SparseLatent(
            batch.gather([g.values.feats for g in batch.groups]),
            batch.coords.to(self._device()),
            batch.seqlens,
            modality=batch.modality,
            meta=batch.meta,
            validate=False,
        )

    def _tile_steps(self, meta: dict[str, Any] | None = None) -> int | None:
        """The tile length of a sample: its meta's ``tile_steps`` (0: untiled), else the
        config's; None: no tiling."""
        steps = (meta or {}).get("tile_steps", self.config.tile_steps)
        if steps is None or steps == 0:
            return None
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise LatentValidationError("meta", f"tile_steps must be an int >= 0, got {steps!r}")
        return steps

    def _encode_prepared(
        self, batch: PackedBatch, S: int | None, override: int | None = None
    ) -> SparseLatent:
        """Encoder tokens of a packed batch, samples longer than ``S`` steps tiled in time:
        feats ``[N, C]``. A per-call ``override`` of the tile length is recorded in every
        sample's meta (``tile_steps``, 0: untiled), so decode uses the same tiles."""
        device = self._device()
        B = batch.batch_size
        if B == 0:
            return SparseLatent(
                torch.zeros(0, self.encoder.width, device=device),
                torch.zeros(0, 4, dtype=torch.int32, device=device),
                torch.zeros(0, dtype=torch.int64),
                modality=(),
                meta=(),
            )
        metas = [dict(m) for m in batch.meta]
        long: dict[int, int] = {}
        per_sample = torch.split(batch.coords, batch.seqlens.tolist())
        for b, coords in enumerate(per_sample):
            if S is not None and _tiles.time_extent(coords) > S:
                long[b] = S
                metas[b]["tile_steps"] = S
            elif override is not None:
                metas[b]["tile_steps"] = S or 0
        if not long:
            feats = self._encode_batch(batch)  # [N, C]
        else:
            short = [b for b in range(B) if b not in long]
            parts: dict[int, torch.Tensor] = {}
            if short:
                sub = batch.select(short)
                chunks = torch.split(self._encode_batch(sub), sub.seqlens.tolist())
                parts.update(zip(short, chunks, strict=True))
            for b, S in long.items():
                group, sample = batch.sample(b)
                parts[b] = _tiles.encode_long(self, group.name, sample, S)
            feats = torch.cat([parts[b] for b in range(B)])  # [N, C]
        return SparseLatent(
            feats,
            batch.coords.to(feats.device),
            batch.seqlens,
            modality=batch.modality,
            meta=metas,
            validate=False,
        )

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
        S = self._tile_steps() if tile_steps is None else _check_steps(tile_steps)
        if isinstance(samples, SparseLatent) or S is None:
            return self._encode_prepared(self._prepare(samples, modality), S, tile_steps)
        samples = self._as_list(samples, modality)
        names = self._names(samples, modality, len(samples))
        split: dict[int, list[Any]] = {}
        for b, (sample, name) in enumerate(zip(samples, names, strict=True)):
            pieces = self.modality(name).split_time(sample, S)
            if pieces is not None and len(pieces) > 1:
                split[b] = pieces
            elif pieces:
                samples[b] = pieces[0]  # already converted (a file is not read twice)
        if not split:
            return self._encode_prepared(self._prepare(samples, names), S, tile_steps)
        rest = [b for b in range(len(samples)) if b not in split]
        parts: dict[int, SparseLatent] = {}
        if rest:
            latent = self._encode_prepared(
                self._prepare([samples[b] for b in rest], [names[b] for b in rest]), S, tile_steps
            )
            parts.update(zip(rest, latent.unpack(), strict=True))
        for b, pieces in split.items():
            parts[b] = _tiles.encode_pieces(self, names[b], pieces, S)
        return SparseLatent.pack(parts[b] for b in range(len(samples)))

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

    def prepare(self, samples: Any, modality: str | Sequence[str] | None = None) -> PackedBatch:
        """Raw samples (or a :class:`SparseLatent` of raw values) -> the packed, normalised
        batch that ``model(batch)`` takes: one group per modality, on the model's device."""
        return self._prepare(samples, modality)

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
        kwargs = (
            {}
            if sample is None or getattr(bottleneck, "is_discrete", False)
            else {"sample": sample}
        )
        out = bottleneck(features.feats, **kwargs)
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
        """A fresh decoder KV cache of ``steps`` latent steps (default ``config.kv_cache_steps``)
        for :meth:`decode_tile`."""
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
        latent = latent.to(self._device())
        if latent.batch_size == 0:
            return []
        steps = self.config.kv_cache_steps if kv_cache_steps is None else kv_cache_steps
        if self.training:
            steps = 0  # independent tiles: the cache's detached keys would cut gradients
        per_sample = torch.split(latent.coords, latent.seqlens.tolist())
        long = {}
        for b, coords in enumerate(per_sample):
            S = self._tile_steps(latent.meta[b])
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
            steps = self._tile_steps(latent.meta[0])
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

    def tokenize(self, samples: Any, modality: str | Sequence[str] | None = None) -> DiscreteTokens:
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


def _check_steps(steps: Any) -> int | None:
    """A per-call tile length: a positive int, or 0 for no tiling (None)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"tile_steps must be an int >= 0 (0: no tiling), got {steps!r}")
    return steps or None
