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

:class:`ATokenModel` holds the components and knows no registry: ``atoken.Tokenizer``
builds them from the registries and the config, implements :meth:`ATokenModel.modality`, and
adds the raw-sample API (encode, decode, tiling of long samples, persistence).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.batch import PackedBatch, PackedGroup
from atoken.core.components import BottleneckOutput
from atoken.core.decoder import Decoder
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.core.projection import ModalityProjections
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
    """Encoder, per-modality projections, bottleneck, decoder, heads and semantic projection.

    A subclass sets the modules (``encoder``, ``projections``, ``bottleneck``, ``decoder``,
    ``head``, ``heads``, ``semantic``) and ``config``, and implements :meth:`modality`.
    """

    config: Any
    encoder: Encoder
    projections: ModalityProjections
    bottleneck: nn.Module | None
    decoder: Decoder | None
    head: nn.Module | None
    heads: nn.ModuleDict
    semantic: SemanticProjection | None

    def modality(self, name: str) -> Modality:
        """The built modality ``name`` (the subclass resolves names)."""
        raise NotImplementedError

    def default_modality(self) -> str:
        """The modality of raw samples when a call names none (the subclass decides)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------ inputs
    def _names(self, samples: Any, modality: str | Sequence[str] | None, count: int) -> list[str]:
        if modality is None:
            modality = self.default_modality()
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

    def prepare(self, samples: Any, modality: str | Sequence[str] | None = None) -> PackedBatch:
        """Raw samples (or a :class:`SparseLatent` of raw values) -> the packed, normalised
        batch that ``model(batch)`` takes: one group per modality, on the model's device."""
        return self._prepare(samples, modality)

    def forward(
        self,
        batch: PackedBatch,
        *,
        sample: bool | None = None,
        decode: bool = True,
        embed: bool = False,
    ) -> ModelOutput:
        """One pass over a packed batch: encode -> bottleneck -> decode -> heads (-> pool).

        Args:
            batch: normalised values grouped by modality (``Tokenizer.prepare``).
            sample: a continuous latent is a sample in training mode and the mean otherwise;
                True/False forces either (ignored by a discrete bottleneck).
            decode: run the decoder and the heads (``samples``).
            embed: pool the encoder's tokens into the semantic embedding (``embedding``).

        Long samples are not tiled here: this is the training step on whole samples (tiling
        is the raw-sample API's, ``Tokenizer.encode``/``decode``).
        """
        bottleneck, decoder, _ = self._require_decoder()
        features = SparseLatent(
            self._encode_batch(batch),  # [N, C]
            batch.coords.to(self._device()),
            batch.seqlens,
            modality=batch.modality,
            meta=batch.meta,
            validate=False,
        )
        discrete = getattr(bottleneck, "is_discrete", False)
        kwargs = {} if sample is None or discrete else {"sample": sample}
        out = bottleneck(features.feats, **kwargs)  # latent [N, L]
        latent = features.replace(feats=out.latent)
        samples = None
        if decode:
            tokens = decoder(latent.feats, latent.coords, latent.seqlens)  # [N, C']
            samples = self._to_samples(tokens, latent)
        embedding = self.embed_features(features) if embed else None  # [B, D]
        return ModelOutput(
            features=features, latent=latent, bottleneck=out, samples=samples, embedding=embedding
        )

    def _device(self) -> torch.device:
        return self.encoder.patch_embed.proj.weight.device

    def _require_decoder(self) -> tuple[nn.Module, Decoder, nn.Module]:
        if self.bottleneck is None or self.decoder is None or self.head is None:
            raise ConfigError("this tokenizer has no decoder (config.decoder is None)")
        return self.bottleneck, self.decoder, self.head

    def head_for(self, name: str) -> nn.Module:
        """The head that decodes modality ``name`` (its own, or the shared ``head``)."""
        _, _, shared = self._require_decoder()
        self.modality(name)
        return self.heads[name] if name in self.heads else shared  # noqa: SIM401 (ModuleDict)

    def _embed_values(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Normalised values ``[n, d]`` of modality ``name`` -> tokens ``[n, C]``."""
        if self.projections.has(name):
            return self.projections.embed(
                name, values.to(self.projections.inputs[name].weight.dtype)
            )
        # the patch embedding computes in its weights' dtype (a model cast to bf16 whole)
        return self.encoder.patch_embed(values.to(self.encoder.patch_embed.proj.weight.dtype))

    def _encode_batch(self, batch: PackedBatch) -> torch.Tensor:
        """One encoder pass over a whole packed batch: tokens ``[N, C]`` in batch order."""
        x = batch.gather([self._embed_values(g.name, g.values.feats) for g in batch.groups])
        pos = [self.modality(name).uses_pos_table for name in batch.modality]
        return self.encoder.forward_tokens(
            x, batch.coords.to(x.device), batch.seqlens, pos_samples=pos
        )  # [N, C]

    def embed_features(self, features: SparseLatent) -> torch.Tensor:
        """:meth:`embed` from the encoder's final tokens (one encoder pass for both paths)."""
        if self.semantic is None:
            return self.encoder.pool(features.feats, features.seqlens)
        pooled = self.encoder.head(features.feats, features.seqlens, normalize=False)  # [B, C]
        return self.semantic(pooled)  # [B, D]

    def _to_samples(self, tokens: torch.Tensor, latent: SparseLatent) -> list[Any]:
        """Decoder tokens ``[N, C]`` -> samples, each modality through its own head."""
        names = latent.modality
        if len(set(names)) == 1:
            return self._head_samples(names[0], tokens, latent)
        out: list[Any] = [None] * latent.batch_size
        chunks = torch.split(tokens, latent.seqlens.tolist())
        for name in dict.fromkeys(names):
            idx = [b for b, m in enumerate(names) if m == name]
            sub = latent.select(idx)
            part = torch.cat([chunks[b] for b in idx])  # [n_g, C]
            for b, sample in zip(idx, self._head_samples(name, part, sub), strict=True):
                out[b] = sample
        return out

    def _head_samples(self, name: str, tokens: torch.Tensor, latent: SparseLatent) -> list[Any]:
        """The tokens of samples of one modality through its head, then back to samples."""
        mod = self.modality(name)
        head = self.head_for(name)
        if hasattr(head, "to_samples"):
            return list(head.to_samples(head(tokens, latent), latent, mod))
        if getattr(head, "partial_values", False) and mod.content_dim < mod.value_dim:
            # Predict the content values only (images: slot 0 of 4): exact, and a quarter of
            # the head's work and memory.
            values = head(tokens, latent, num_values=mod.content_dim)  # [N, content_dim]
        else:
            values = head(tokens, latent)  # [N, d]
        N = tokens.shape[0]
        if not isinstance(values, torch.Tensor) or values.shape not in (
            (N, mod.content_dim),
            (N, mod.value_dim),
        ):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values)
            raise ConfigError(
                f"head {type(head).__name__} gave {got} for {N} tokens of modality {name!r}: "
                f"a head without to_samples must give [N, {mod.value_dim}] values (or "
                f"[N, {mod.content_dim}] content values)"
            )
        values = mod.denormalize(values.float())  # [N, k]
        if values.shape[1] < mod.value_dim:
            values = F.pad(values, (0, mod.value_dim - values.shape[1]))  # [N, d], zero padding
        return mod.unpack(latent.replace(feats=values))
