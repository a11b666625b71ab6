"""The model: ``forward(batch) -> ModelOutput`` is the training step, in one readable pass.

Shapes:
    B  samples, N tokens of all samples packed, C encoder width, L latent channels
    C' decoder width, D semantic width (text space, or C without a text encoder)
    batch: a :class:`~atoken.core.batch.PackedBatch` of normalised values, grouped by
    modality (each group's values [n_g, d_g]); coords int32 [N, 4]; seqlens int64 [B]

    x = embed(values)                 per group: the patch embedding or the modality's own
                                      projection -> [N, C], interleaved back to batch order
    features = encoder(x)             + 2D position table where the modality uses it,
                                      4D RoPE, block-diagonal attention      [N, C]
    latent = bottleneck(features)     KL posterior (sample or mean) or FSQ   [N, L]
    tokens = decoder(latent)          RMSNorm, qk-norm, RoPE                 [N, C']
    samples = heads(tokens)           each modality through its own head, then the
                                      modality's denormalize and unpatchify
    embedding = pool(features)        MAP head (+ W_s into the text space)  [B, D]

:class:`ATokenModel` is built from its parts and knows no registry: the composition root
(:func:`atoken.create_tokenizer`) turns the config's names into the parts, modalities
included, so :meth:`ATokenModel.modality` is a lookup in the model. The raw-sample API
(``encode``, ``decode``, ``embed``) uses the pieces the training step uses (``prepare``,
``encode_tokens``, ``samples_from_tokens``); long samples go tile by tile
(:mod:`atoken.core.tiles`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from atoken.core import tiles
from atoken.core.attention import AttentionFn, default_attention_backend
from atoken.core.batch import PackedBatch
from atoken.core.boundary import BoundaryChecks
from atoken.core.components import BottleneckOutput
from atoken.core.decoder import Decoder
from atoken.core.encoder import Encoder
from atoken.core.errors import (
    ConfigError,
    LatentValidationError,
    ModalityInputError,
    UnknownModalityError,
)
from atoken.core.head_output import head_samples
from atoken.core.kv_cache import KVCache, decode_with_cache
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.core.projection import ModalityProjections
from atoken.core.sample_inputs import (
    ModalityArg,
    pack_latent,
    pack_samples,
    packed_values,
    sample_list,
    sample_names,
)
from atoken.core.semantic import SemanticProjection

__all__ = ["ATokenModel", "ModelOutput"]


@attrs.frozen(kw_only=True, eq=False)
class ModelOutput:
    """What one :meth:`ATokenModel.forward` pass gives.

    Attributes:
        features: the encoder's final tokens ``[N, C]`` with coords, modality names and meta.
        latent: the bottleneck's latent ``[N, L]`` (same coords and meta).
        bottleneck: its output (``terms`` such as ``kl`` for the losses, FSQ ``ids``).
        samples: the decoded samples in batch order (None with ``decode=False``).
        embedding: the semantic embedding ``[B, D]`` (None unless ``embed=True``).
    """

    features: SparseLatent
    latent: SparseLatent
    bottleneck: BottleneckOutput
    samples: list[Any] | None = None
    embedding: torch.Tensor | None = None


class ATokenModel(nn.Module):
    """Encoder, per-modality projections, bottleneck, decoder, heads and semantic projection,
    and the modalities they were built for.

    Args:
        config: the :class:`~atoken.core.config.TokenizerConfig` the parts were built from.
        encoder, projections: the encoder and the own input projections of modalities that
            do not read through the shared patch embedding (``shared_pixel_path``).
        modalities: name -> built modality, exactly the ones this model encodes and decodes.
        default_modality: the modality of raw samples when a call names none.
        bottleneck, decoder, head: the latent map, the decoder and the shared head (all None
            for an encoder-only model).
        heads: the own heads of modalities that do not decode through the shared head.
        semantic: W_s into a text space (None without a text encoder).
        attention: a backend name -> its attention function (None: the blocks' own).
        boundary: which plugin provides each modality and which head decodes it, for the
            checks on what they return (:mod:`atoken.core.boundary`; None: names unknown).
    """

    def __init__(
        self,
        config: Any,
        *,
        encoder: Encoder,
        projections: ModalityProjections,
        modalities: Mapping[str, Modality],
        default_modality: str,
        bottleneck: nn.Module | None = None,
        decoder: Decoder | None = None,
        head: nn.Module | None = None,
        heads: Mapping[str, nn.Module] | None = None,
        semantic: SemanticProjection | None = None,
        attention: Callable[[str], AttentionFn] | None = None,
        boundary: BoundaryChecks | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.projections = projections
        self.bottleneck = bottleneck
        self.decoder = decoder
        self.head = head
        self.heads = nn.ModuleDict(dict(heads or {}))
        self.semantic = semantic
        self.boundary = BoundaryChecks() if boundary is None else boundary
        self._modalities = dict(modalities)
        self._default_modality = default_modality
        self._attention_fn = attention
        self._attention: tuple[str, str] | None = None  # (device, backend name) in use

    # ------------------------------------------------------------------------ parts
    def modality(self, name: str) -> Modality:
        """The built modality ``name``.

        Raises:
            ModalityInputError: ``name`` is not a non-empty str.
            UnknownModalityError: the model was not built for ``name`` (the message names
                its modalities and how to add one).
        """
        if not isinstance(name, str) or not name:
            raise ModalityInputError(f"modality must be a registered name, got {name!r}")
        if name not in self._modalities:
            raise UnknownModalityError(name, tuple(self._modalities))
        return self._modalities[name]

    @property
    def modalities(self) -> tuple[str, ...]:
        """The names of the modalities this model was built for, in build order."""
        return tuple(self._modalities)

    def default_modality(self) -> str:
        """The modality of raw samples when a call names none."""
        return self._default_modality

    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        return self.encoder.patch_embed.proj.weight.device

    def require_decoder(self) -> tuple[nn.Module, Decoder, nn.Module]:
        """``(bottleneck, decoder, shared head)``. Raises ConfigError: an encoder-only model."""
        if self.bottleneck is None or self.decoder is None or self.head is None:
            raise ConfigError("this tokenizer has no decoder (config.decoder is None)")
        return self.bottleneck, self.decoder, self.head

    def head_for(self, name: str) -> nn.Module:
        """The head that decodes modality ``name`` (its own, or the shared ``head``)."""
        _, _, shared = self.require_decoder()
        self.modality(name)
        return self.heads[name] if name in self.heads else shared  # noqa: SIM401 (ModuleDict)

    # ------------------------------------------------------------------------ attention
    @property
    def attention_backend(self) -> str:
        """The name of the backend for the model's current device."""
        return self.config.attention or default_attention_backend(self.device)

    def set_attention_backend(self, name: str | None) -> None:
        """Use the backend ``name`` (None: pick by device) from the next call.

        Raises:
            UnknownComponentError: for a name no plugin registered.
        """
        if name is not None and self._attention_fn is not None:
            self._attention_fn(name)  # fail now, with close matches
        self.config = self.config.with_overrides(attention=name)
        self._attention = None

    def use_attention(self) -> None:
        """Give the blocks the attention function of :attr:`attention_backend` (once per
        device and backend; every entry point calls it)."""
        key = (str(self.device), self.attention_backend)
        if self._attention_fn is None or self._attention == key:
            return
        fn = self._attention_fn(key[1])
        self.encoder.set_attention_fn(fn)
        if self.decoder is not None:
            self.decoder.set_attention_fn(fn)
        self._attention = key

    # ------------------------------------------------------------------------ inputs
    def prepare(self, samples: Any, modality: ModalityArg = None) -> PackedBatch:
        """Raw samples (or a :class:`SparseLatent` of raw values) -> the packed, normalised
        batch that ``model(batch)`` takes: one group per modality, on the model's device."""
        default = self._default_modality
        if isinstance(samples, SparseLatent):
            return pack_latent(samples, modality, default, self.modality, self.device)
        samples = sample_list(samples, modality, default, self.modality)
        names = sample_names(modality, len(samples), default)
        return pack_samples(samples, names, self.modality, self.device, self.boundary)

    def pack(self, samples: Any, modality: str | None = None) -> SparseLatent:
        """Patchify, pack and normalise samples of one value size: feats are the normalised
        values ``[N, d]`` on the model's device. A :class:`SparseLatent` of raw values is
        normalised as is.

        Raises:
            ConfigError: the samples' modalities have different value sizes (encode them
                instead: a mixed batch has no single value tensor).
        """
        return packed_values(
            self.prepare(samples, modality), self.config.encoder.patch_dim, self.device
        )

    # ------------------------------------------------------------------------ training step
    def forward(
        self,
        batch: PackedBatch | Any,
        modality: ModalityArg = None,
        *,
        sample: bool | None = None,
        decode: bool = True,
        embed: bool = False,
    ) -> ModelOutput | torch.Tensor:
        """One pass over a packed batch: encode -> bottleneck -> decode -> heads (-> pool).

        Args:
            batch: normalised values grouped by modality (:meth:`prepare`); raw samples
                instead give :meth:`embed` (``modality`` names theirs).
            sample: a continuous latent is a sample in training mode and the mean otherwise;
                True/False forces either (ignored by a discrete bottleneck).
            decode: run the decoder and the heads (``samples``).
            embed: pool the encoder's tokens into the semantic embedding (``embedding``).

        Long samples are not tiled here: this is the training step on whole samples (tiling
        is :meth:`encode`'s and :meth:`decode`'s).
        """
        if not isinstance(batch, PackedBatch):
            return self.embed(batch, modality)
        self.use_attention()
        _, decoder, _ = self.require_decoder()
        features = SparseLatent(
            self.encode_tokens(batch),  # [N, C]
            batch.coords.to(self.device),
            batch.seqlens,
            modality=batch.modality,
            meta=batch.meta,
            validate=False,
        )
        out = self.apply_bottleneck(features, sample)
        latent = features.replace(feats=out.latent)  # [N, L]
        samples = None
        if decode:
            tokens = decoder(latent.feats, latent.coords, latent.seqlens)  # [N, C']
            samples = self.samples_from_tokens(tokens, latent)
        embedding = self.embed_features(features) if embed else None  # [B, D]
        return ModelOutput(
            features=features, latent=latent, bottleneck=out, samples=samples, embedding=embedding
        )

    def embed_values(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Normalised values ``[n, d]`` of modality ``name`` -> tokens ``[n, C]``."""
        if self.projections.has(name):
            return self.projections.embed(
                name, values.to(self.projections.inputs[name].weight.dtype)
            )
        # the patch embedding computes in its weights' dtype (a model cast to bf16 whole)
        return self.encoder.patch_embed(values.to(self.encoder.patch_embed.proj.weight.dtype))

    def encode_tokens(self, batch: PackedBatch) -> torch.Tensor:
        """One encoder pass over a whole packed batch: tokens ``[N, C]`` in batch order."""
        x = batch.gather([self.embed_values(g.name, g.values.feats) for g in batch.groups])
        pos = [self.modality(name).uses_pos_table for name in batch.modality]
        return self.encoder.forward_tokens(
            x, batch.coords.to(x.device), batch.seqlens, pos_samples=pos
        )  # [N, C]

    def apply_bottleneck(
        self, features: SparseLatent, sample: bool | None = None
    ) -> BottleneckOutput:
        """The bottleneck over the encoder's tokens ``[N, C]`` -> latent ``[N, L]``; ``sample``
        forces a continuous latent's sampling on or off (a discrete one ignores it)."""
        bottleneck, _, _ = self.require_decoder()
        as_is = sample is None or getattr(bottleneck, "is_discrete", False)
        return bottleneck(features.feats, **({} if as_is else {"sample": sample}))

    def embed_features(self, features: SparseLatent) -> torch.Tensor:
        """The semantic embedding ``[B, D]`` from the encoder's final tokens."""
        if self.semantic is None:
            return self.encoder.pool(features.feats, features.seqlens)
        pooled = self.encoder.head(features.feats, features.seqlens, normalize=False)  # [B, C]
        return self.semantic(pooled)  # [B, D]

    def samples_from_tokens(self, tokens: torch.Tensor, latent: SparseLatent) -> list[Any]:
        """Decoder tokens ``[N, C']`` -> samples, each modality through its own head."""
        names = latent.modality
        if len(set(names)) == 1:
            name = names[0]
            return head_samples(
                self.modality(name), self.head_for(name), tokens, latent, self.boundary
            )
        out: list[Any] = [None] * latent.batch_size
        chunks = torch.split(tokens, latent.seqlens.tolist())
        for name in dict.fromkeys(names):
            idx = [b for b, m in enumerate(names) if m == name]
            part = torch.cat([chunks[b] for b in idx])  # [n_g, C']
            decoded = head_samples(
                self.modality(name), self.head_for(name), part, latent.select(idx), self.boundary
            )
            for b, sample in zip(idx, decoded, strict=True):
                out[b] = sample
        return out

    # ------------------------------------------------------------------------ raw samples
    def encode_features(
        self, samples: Any, modality: ModalityArg = None, *, tile_steps: int | None = None
    ) -> SparseLatent:
        """The encoder's final tokens (before any bottleneck): feats ``[N, C]``. A sample
        longer than a tile is encoded tile by tile (``tile_steps`` overrides
        ``config.tile_steps`` for this call; its meta records the tile length)."""
        self.use_attention()
        return tiles.encode_samples(self, samples, modality, tile_steps)

    def embed(self, samples: Any, modality: ModalityArg = None) -> torch.Tensor:
        """The L2-normalised semantic embedding per sample: the MAP head's ``[B, C]``, or, with a
        text encoder, that pooled embedding projected by W_s into the text space, ``[B, D]``.
        A clip longer than a tile is pooled over all its tiles' tokens."""
        return self.embed_features(self.encode_features(samples, modality))

    def encode_with_ids(
        self, samples: Any, modality: ModalityArg = None
    ) -> tuple[SparseLatent, torch.Tensor | None]:
        """One encoder pass giving both the latent (as :meth:`encode`) and, for a discrete
        bottleneck, its ids ``[N, G]`` (as ``tokenize``); ids are None otherwise."""
        latent, out = self.encode_latent(samples, modality)
        return latent, out.ids

    def encode_latent(
        self,
        samples: Any,
        modality: ModalityArg = None,
        *,
        sample: bool | None = None,
        tile_steps: int | None = None,
    ) -> tuple[SparseLatent, BottleneckOutput]:
        """The latent (as :meth:`encode`) and the bottleneck's whole output (its ``terms``
        for the losses, ``ids`` of a discrete bottleneck)."""
        features = self.encode_features(samples, modality, tile_steps=tile_steps)
        out = self.apply_bottleneck(features, sample)
        return features.replace(feats=out.latent), out

    def encode(
        self,
        samples: Any,
        modality: ModalityArg = None,
        *,
        sample: bool | None = None,
        tile_steps: int | None = None,
    ) -> SparseLatent:
        """Samples -> the sparse latent: feats ``[N, latent_dim]`` with coords and metadata.

        Args:
            samples: a list of raw samples (or a batch tensor, or a :class:`SparseLatent` of
                raw values).
            modality: the modality of every sample, or one name per sample (a mixed batch);
                None: the default modality.
            sample: a continuous (``kl``) latent is the posterior mean in eval mode and a
                sample in training mode; True/False forces either. A discrete one holds codes.
            tile_steps: latent time steps per tile for this call (default
                ``config.tile_steps``, 0: none): a sample whose coordinates span more is
                encoded in tiles, each alone with its time re-based to 0.
        """
        return self.encode_latent(samples, modality, sample=sample, tile_steps=tile_steps)[0]

    def kv_cache(self, steps: int | None = None) -> KVCache:
        """A fresh KV cache of ``steps`` (default: the config's) for :meth:`decode_tile`."""
        return KVCache(self.config.kv_cache_steps if steps is None else steps)

    def decode(self, latent: SparseLatent, *, kv_cache_steps: int | None = None) -> list[Any]:
        """The latent back to samples, each by its modality's head (images ``[3, H, W]`` in
        [0, 1], unclamped; clips ``[3, T, H, W]``; a plugin's own form).

        A sample longer than its tile (``meta["tile_steps"]``, else ``config.tile_steps``) is
        decoded tile by tile with a KV cache of ``kv_cache_steps`` steps (default
        ``config.kv_cache_steps``; in training mode tiles are independent, as in the official
        training, so every tile gets its own gradients). A sample encoded piece by piece is
        joined piece by piece, so memory is bounded by a tile plus the output.

        Raises:
            ConfigError: no decoder, or a latent of the wrong width.
            LatentValidationError: ``latent`` is not a :class:`SparseLatent`.
        """
        _, decoder, _ = self.require_decoder()
        if not isinstance(latent, SparseLatent):
            raise LatentValidationError(
                "feats", f"decode takes a SparseLatent, got {type(latent).__name__}"
            )
        self.use_attention()
        weight = next(decoder.parameters())  # a stored float16/bfloat16 latent decodes as is
        latent = latent.to(weight.device, dtype=weight.dtype)
        if latent.batch_size == 0:
            return []
        steps = self.config.kv_cache_steps if kv_cache_steps is None else kv_cache_steps
        if self.training:
            steps = 0  # independent tiles: the cache's detached keys would cut gradients
        return tiles.decode_samples(self, latent, steps)

    def decode_tile(
        self, latent: SparseLatent, cache: KVCache | None = None, *, steps: int | None = None
    ) -> list[Any]:
        """Decode one temporal tile: ``latent`` holds one sample whose time is re-based to the
        tile (t from 0). With ``cache`` the tile also attends to the cached steps of the
        previous tiles and the cache is updated (streaming). ``steps``: the tile's length in
        latent steps (default: ``meta["tile_steps"]``, else ``config.tile_steps``); pass the
        true length of a short last tile.

        Raises:
            ConfigError: no decoder.
            LatentValidationError: not a one-sample :class:`SparseLatent`.
        """
        _, decoder, _ = self.require_decoder()
        if not isinstance(latent, SparseLatent) or latent.batch_size != 1:
            got = latent.batch_size if isinstance(latent, SparseLatent) else type(latent).__name__
            raise LatentValidationError("seqlens", f"decode_tile takes one sample, got {got}")
        if steps is None:
            steps = tiles.tile_steps(self, latent.meta[0])
        self.use_attention()
        latent = latent.to(self.device)
        tokens = decode_with_cache(decoder, latent.feats, latent.coords, cache, steps=steps)
        return self.samples_from_tokens(tokens, latent)

    def autoencode(
        self, samples: Any, modality: ModalityArg = None
    ) -> tuple[list[Any], SparseLatent, BottleneckOutput]:
        """Encode and decode with gradients: ``(reconstructions, latent, bottleneck output)``;
        in training mode a continuous latent is sampled."""
        latent, out = self.encode_latent(samples, modality)
        return self.decode(latent), latent, out

    @torch.no_grad()
    def reconstruct(self, samples: Any, modality: ModalityArg = None) -> list[Any]:
        """``decode(encode(samples))`` without gradients (tiled for long clips)."""
        return self.decode(self.encode(samples, modality))
