"""Raw samples -> the packed, normalised batch the model takes (one group per modality).

Shapes:
    B samples; n_g tokens of modality group g; d_g its values per token (``value_dim``)
    PackedBatch: groups of normalised values [n_g, d_g] with coords int32 [n_g, 4], in
    batch order through ``PackedBatch.gather``

A call names the modality of every sample (``"video"``), one name per sample (a mixed batch),
or none (the model's default modality). ``lookup`` turns a name into the model's built
:class:`~atoken.core.modality.Modality`; nothing here knows which modalities exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from atoken.core.batch import PackedBatch, PackedGroup
from atoken.core.boundary import BoundaryChecks
from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality

__all__ = [
    "Lookup",
    "ModalityArg",
    "pack_latent",
    "pack_samples",
    "packed_values",
    "sample_list",
    "sample_names",
]

#: A name -> the model's built modality (raises for a name the model was not built with).
Lookup = Callable[[str], Modality]
#: What a call may pass as ``modality``: one name, one name per sample, or None (default).
ModalityArg = str | Sequence[str] | None


def sample_names(modality: ModalityArg, count: int, default: str) -> list[str]:
    """One modality name per sample: ``modality`` (a name or a list), else ``default``.

    Raises:
        ModalityInputError: not a name or a list of names, or a list of the wrong length.
    """
    if modality is None:
        modality = default
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


def sample_list(samples: Any, modality: ModalityArg, default: str, lookup: Lookup) -> list[Any]:
    """Raw samples as a list: a tensor with one more dimension than the modality's samples is
    a batch (``[B, C, H, W]`` images), split along its first dimension.

    Raises:
        ModalityInputError: a tensor of the wrong rank (the message shows the batch shape the
            modality takes), a mixed-modality tensor, or neither a list nor a tensor.
    """
    if isinstance(samples, torch.Tensor):
        count = samples.shape[0] if samples.ndim else 1
        names = set(sample_names(modality, count, default))
        if len(names) != 1:
            raise ModalityInputError("a tensor batch holds samples of one modality")
        mod = lookup(names.pop())
        nd = mod.sample_ndim
        if samples.ndim != nd + 1:
            shapes = {2: "[B, H, W]", 3: "[B, C, H, W]", 4: "[B, C, T, H, W]"}
            batch = (shapes.get(nd) if mod.layout == "thw" else None) or f"{nd + 1}-D [B, ...]"
            one = " (one sample x: pass [x])" if samples.ndim == nd else ""
            raise ModalityInputError(
                f"a {mod.name} tensor batch must be {batch}, got {tuple(samples.shape)}; pass "
                f"a list for single samples{one}"
            )
        return list(samples.unbind(0))
    if not isinstance(samples, Sequence) or isinstance(samples, (str, bytes)):
        raise ModalityInputError(
            f"samples must be a list (or a batch tensor), got {type(samples).__name__}"
        )
    return list(samples)


def pack_samples(
    samples: Sequence[Any],
    names: Sequence[str],
    lookup: Lookup,
    device: torch.device,
    checks: BoundaryChecks | None = None,
) -> PackedBatch:
    """Patchify and normalise each modality's samples into its group, on ``device``; what the
    modality returns is checked on the way in (``checks``, :mod:`atoken.core.boundary`).

    Raises:
        ModalityInputError: a modality's ``patchify`` or ``pack`` broke the contract (the
            message names the modality, its plugin and the hook).
    """
    checks = BoundaryChecks() if checks is None else checks
    groups = []
    for name in dict.fromkeys(names):
        idx = tuple(b for b, m in enumerate(names) if m == name)
        mod = lookup(name)
        raw = checks.pack(mod, [samples[b] for b in idx]).to(device)  # feats [n_g, d_g]
        groups.append(PackedGroup(name, idx, raw.replace(feats=mod.normalize(raw.feats))))
    return PackedBatch.from_groups(groups)


def pack_latent(
    latent: SparseLatent, modality: ModalityArg, default: str, lookup: Lookup, device: torch.device
) -> PackedBatch:
    """A :class:`SparseLatent` of raw values, normalised per modality (it keeps its own names).

    Raises:
        ModalityInputError: ``modality`` names other modalities than the latent's.
    """
    latent = latent.to(device)
    if modality is not None:
        given = sample_names(modality, latent.batch_size, default)
        if tuple(given) != latent.modality:
            raise ModalityInputError(
                f"modality={modality!r} but the latent's samples are {latent.modality}"
            )
    groups = []
    for name in dict.fromkeys(latent.modality):
        idx = [b for b, m in enumerate(latent.modality) if m == name]
        part = latent.select(idx) if len(idx) != latent.batch_size else latent
        mod = lookup(name)
        mod.check_values(part.feats)  # [n_g, d_g]
        groups.append(PackedGroup(name, tuple(idx), part.replace(feats=mod.normalize(part.feats))))
    return PackedBatch.from_groups(groups)


def packed_values(batch: PackedBatch, width: int, device: torch.device) -> SparseLatent:
    """The batch's normalised values as one latent on ``device``, feats ``[N, d]`` in batch
    order (``width``: d of an empty batch).

    Raises:
        ConfigError: the groups' value sizes differ (a mixed batch has no single value tensor).
    """
    device = batch.groups[0].values.feats.device if batch.groups else torch.device("cpu")
    if not batch.groups:
        return SparseLatent(
            torch.zeros(0, width),
            torch.zeros(0, 4, dtype=torch.int32),
            torch.zeros(0, dtype=torch.int64),
        )
    dims = {g.values.channels for g in batch.groups}
    if len(dims) > 1:
        raise ConfigError(f"pack: the samples' value sizes differ ({sorted(dims)})")
    return SparseLatent(
        batch.gather([g.values.feats for g in batch.groups]),  # [N, d]
        batch.coords.to(device),
        batch.seqlens,
        modality=batch.modality,
        meta=batch.meta,
        validate=False,
    )
