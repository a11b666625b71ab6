"""The feature-coordinate contract: a packed batch of sparse 4D token sets.

Glossary (used in every shape comment of atoken):
    B  samples in the batch
    N  tokens of all samples together, N = sum(seqlens)
    C  channels per token
    coords int32 [N, 4] = (t, x, y, z): x is the column (width) index, y the row (height)
    index, all in token units, non-negative, unique within one sample.

Samples are packed back to back: the tokens of sample b are rows
``offsets[b]:offsets[b + 1]`` of ``feats`` and ``coords``. Nothing is padded.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from atoken.core.errors import LatentValidationError

__all__ = ["SparseLatent"]

_COORD_DIMS = 4


def _as_modality_tuple(modality: str | Sequence[str], batch: int) -> tuple[str, ...]:
    if isinstance(modality, str):
        if not modality:
            raise LatentValidationError("modality", "must be a non-empty name, got ''")
        return (modality,) * batch
    names = tuple(modality)
    if len(names) != batch:
        raise LatentValidationError(
            "modality", f"got {len(names)} modality names for {batch} samples"
        )
    for name in names:
        if not isinstance(name, str) or not name:
            raise LatentValidationError("modality", f"names must be non-empty str, got {name!r}")
    return names


def _as_seqlens(seqlens: Any) -> torch.Tensor:
    """A list of token counts as int64 ``[B]``: each an int in ``[0, 2**62)``."""
    try:
        items = list(seqlens)
    except TypeError as exc:
        raise LatentValidationError(
            "seqlens", f"must be a tensor or a list of ints, got {type(seqlens).__name__}"
        ) from exc
    for b, n in enumerate(items):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n < 2**62:
            raise LatentValidationError(
                "seqlens", f"entry {b} must be an int token count >= 0, got {n!r}"
            )
    return torch.as_tensor([int(n) for n in items], dtype=torch.int64)


def _as_meta_tuple(meta: Sequence[Mapping[str, Any]] | None, batch: int) -> tuple[dict, ...]:
    if meta is None:
        return tuple({} for _ in range(batch))
    items = tuple(meta)
    if len(items) != batch:
        raise LatentValidationError(
            "meta", f"got {len(items)} metadata entries for {batch} samples"
        )
    for item in items:
        if not isinstance(item, Mapping):
            raise LatentValidationError("meta", f"entries must be mappings, got {type(item)}")
    return tuple(dict(item) for item in items)


def _check_unique_coords(coords: torch.Tensor, seqlens: torch.Tensor) -> None:
    """Raise if any sample holds the same (t, x, y, z) twice."""
    N = coords.shape[0]
    if N < 2:
        return
    sample = torch.repeat_interleave(torch.arange(len(seqlens)), seqlens.cpu())  # [N]
    keys = torch.cat([sample[:, None].to(coords.device), coords.long()], dim=1)  # [N, 5]
    # Linearise (sample, t, x, y, z) into one int64 when it fits, else fall back to rows.
    extents = keys.amax(dim=0) + 1  # [5]
    if float(torch.prod(extents.double())) < 2**62:
        strides = torch.ones(5, dtype=torch.long, device=keys.device)
        for i in range(3, -1, -1):
            strides[i] = strides[i + 1] * extents[i + 1]
        flat = (keys * strides).sum(dim=1)  # [N]
        n_unique = torch.unique(flat).numel()
    else:
        n_unique = torch.unique(keys, dim=0).shape[0]
    if n_unique != N:
        dup = _first_duplicate(keys)
        raise LatentValidationError(
            "coords",
            f"duplicate coordinate {tuple(dup[1:])} within sample {dup[0]}; "
            "each sample's coordinates must be unique",
        )


def _first_duplicate(keys: torch.Tensor) -> list[int]:
    uniq, counts = torch.unique(keys, dim=0, return_counts=True)
    return uniq[counts > 1][0].tolist()


class SparseLatent:
    """A packed batch of sparse token sets: ``(feats [N, C], coords [N, 4])`` per sample.

    Args:
        feats: float tensor ``[N, C]``, finite.
        coords: int32 tensor ``[N, 4]`` of (t, x, y, z), non-negative, unique per sample.
        seqlens: int64 tensor ``[B]`` of token counts (zero allowed), summing to N.
        modality: one modality name for all samples, or one per sample.
        meta: one mapping per sample (grid shape, original size, ...), default empty.
        validate: run the invariant checks (on by default; internal fast paths that only
            reslice an already valid latent turn it off).

    Raises:
        LatentValidationError: naming the offending field, for any broken invariant.
    """

    __slots__ = ("coords", "feats", "meta", "modality", "seqlens")

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        seqlens: torch.Tensor | Sequence[int],
        *,
        modality: str | Sequence[str] = "unknown",
        meta: Sequence[Mapping[str, Any]] | None = None,
        validate: bool = True,
    ) -> None:
        if not isinstance(seqlens, torch.Tensor):
            seqlens = _as_seqlens(seqlens)
        if validate:
            self._validate_tensors(feats, coords, seqlens)
        B = int(seqlens.shape[0])
        self.feats = feats
        self.coords = coords
        self.seqlens = seqlens
        self.modality = _as_modality_tuple(modality, B)
        self.meta = _as_meta_tuple(meta, B)
        if validate:
            _check_unique_coords(coords, seqlens)

    @staticmethod
    def _validate_tensors(feats: Any, coords: Any, seqlens: Any) -> None:
        for field, value in (("feats", feats), ("coords", coords), ("seqlens", seqlens)):
            if not isinstance(value, torch.Tensor):
                raise LatentValidationError(field, f"must be a torch.Tensor, got {type(value)}")
        for field, value in (("feats", feats), ("coords", coords), ("seqlens", seqlens)):
            if value.device.type == "meta":
                raise LatentValidationError(field, "is on the meta device: it holds no values")
        if feats.ndim != 2:
            raise LatentValidationError("feats", f"must have shape [N, C], got rank {feats.ndim}")
        if not feats.is_floating_point():
            raise LatentValidationError("feats", f"must be a float tensor, got {feats.dtype}")
        if coords.ndim != 2 or coords.shape[1] != _COORD_DIMS:
            raise LatentValidationError(
                "coords", f"must have shape [N, 4], got {tuple(coords.shape)}"
            )
        if coords.dtype != torch.int32:
            raise LatentValidationError("coords", f"must be int32, got {coords.dtype}")
        if seqlens.ndim != 1:
            raise LatentValidationError("seqlens", f"must have shape [B], got rank {seqlens.ndim}")
        if seqlens.dtype != torch.int64:
            raise LatentValidationError("seqlens", f"must be int64, got {seqlens.dtype}")
        N = feats.shape[0]
        if coords.shape[0] != N:
            raise LatentValidationError(
                "coords", f"has {coords.shape[0]} rows but feats has {N} (length mismatch)"
            )
        if bool((seqlens < 0).any()):
            raise LatentValidationError("seqlens", "must be non-negative")
        total = int(seqlens.sum())
        if total != N:
            raise LatentValidationError("seqlens", f"sum to {total} but there are {N} tokens")
        if N and bool((coords < 0).any()):
            raise LatentValidationError("coords", "must be non-negative")
        if N and not bool(torch.isfinite(feats).all()):
            raise LatentValidationError("feats", "contain NaN or infinite values")

    # ----------------------------------------------------------------------------- properties
    @property
    def batch_size(self) -> int:
        """B, the number of samples."""
        return int(self.seqlens.shape[0])

    @property
    def num_tokens(self) -> int:
        """N, the number of tokens of all samples."""
        return int(self.feats.shape[0])

    @property
    def channels(self) -> int:
        """C, the channels per token."""
        return int(self.feats.shape[1])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def offsets(self) -> torch.Tensor:
        """int64 ``[B + 1]``: tokens of sample b are rows ``offsets[b]:offsets[b + 1]``."""
        zero = torch.zeros(1, dtype=torch.int64, device=self.seqlens.device)
        return torch.cat([zero, torch.cumsum(self.seqlens, 0)])

    def sample_ids(self) -> torch.Tensor:
        """int64 ``[N]``: the sample index of every token."""
        ids = torch.arange(self.batch_size, device=self.seqlens.device)
        return torch.repeat_interleave(ids, self.seqlens).to(self.feats.device)

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        mods = sorted(set(self.modality))
        return (
            f"SparseLatent(B={self.batch_size}, N={self.num_tokens}, C={self.channels}, "
            f"dtype={self.dtype}, device={self.device}, modality={mods})"
        )

    # ----------------------------------------------------------------------------- packing
    def unpack(self) -> list[SparseLatent]:
        """Split into one single-sample latent per sample; feats and coords are views."""
        sizes = self.seqlens.tolist()
        feats = torch.split(self.feats, sizes)
        coords = torch.split(self.coords, sizes)
        return [
            SparseLatent(
                f,
                c,
                self.seqlens[b : b + 1],
                modality=self.modality[b : b + 1],
                meta=self.meta[b : b + 1],
                validate=False,
            )
            for b, (f, c) in enumerate(zip(feats, coords, strict=True))
        ]

    @classmethod
    def pack(cls, latents: Iterable[SparseLatent]) -> SparseLatent:
        """Concatenate latents (of any batch sizes) into one batch, in order.

        Raises:
            LatentValidationError: when the list is empty, or channels, dtypes or devices differ.
        """
        items = list(latents)
        if not items:
            raise LatentValidationError("feats", "cannot pack an empty list of latents")
        for item in items:
            if not isinstance(item, SparseLatent):
                raise LatentValidationError(
                    "feats", f"can only pack SparseLatent, got {type(item)}"
                )
        first = items[0]
        for item in items[1:]:
            if item.channels != first.channels:
                raise LatentValidationError(
                    "feats", f"cannot pack {first.channels} and {item.channels} channels"
                )
            if item.dtype != first.dtype or item.device != first.device:
                raise LatentValidationError(
                    "feats",
                    f"cannot pack {first.dtype}@{first.device} with {item.dtype}@{item.device}",
                )
        return cls(
            torch.cat([i.feats for i in items]),
            torch.cat([i.coords for i in items]),
            torch.cat([i.seqlens for i in items]),
            modality=[m for i in items for m in i.modality],
            meta=[m for i in items for m in i.meta],
            validate=False,  # each part is already valid and samples do not interact
        )

    def select(self, indices: Sequence[int] | torch.Tensor) -> SparseLatent:
        """The samples at ``indices`` (ints, possibly repeated or reordered, or a bool mask).

        Raises:
            LatentValidationError: for an out-of-range index or a mask of the wrong length.
        """
        B = self.batch_size
        try:
            idx = torch.as_tensor(indices)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise LatentValidationError(
                "seqlens", f"select takes ints or a bool mask, got {indices!r}"
            ) from exc
        if (
            idx.numel()
            and idx.dtype != torch.bool
            and (idx.is_floating_point() or idx.is_complex())
        ):
            raise LatentValidationError(
                "seqlens", f"select takes ints or a bool mask, got {idx.dtype} {indices!r}"
            )
        if idx.dtype == torch.bool:
            if idx.shape != (B,):
                raise LatentValidationError(
                    "seqlens", f"bool mask has shape {tuple(idx.shape)}, expected ({B},)"
                )
            idx = torch.nonzero(idx).flatten()
        idx = idx.long().flatten()
        if idx.numel() and (int(idx.min()) < -B or int(idx.max()) >= B):
            raise LatentValidationError("seqlens", f"sample index out of range for B={B}")
        idx = torch.where(idx < 0, idx + B, idx).tolist()
        parts = self.unpack()
        if not idx:
            return SparseLatent(
                self.feats[:0],
                self.coords[:0],
                self.seqlens[:0],
                modality=(),
                meta=(),
                validate=False,
            )
        return SparseLatent.pack(parts[i] for i in idx)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SparseLatent:
        """Move to ``device``; ``dtype`` applies to feats only (coords stay int32).

        Raises:
            LatentValidationError: ``dtype`` is not floating, or feats overflow it (checked
                only when its range is smaller than the feats' dtype, e.g. float32 -> float16).
        """
        feats = self.feats.to(device=device, dtype=dtype)
        if dtype is not None and not feats.is_floating_point():
            raise LatentValidationError("feats", f"dtype must be floating, got {dtype}")
        if (
            dtype is not None
            and self.feats.is_floating_point()
            and torch.finfo(dtype).max < torch.finfo(self.feats.dtype).max
            and feats.numel()
            and not bool(torch.isfinite(feats).all())
        ):
            largest = float(self.feats.abs().max())
            raise LatentValidationError(
                "feats",
                f"values up to {largest:.6g} in magnitude overflow {dtype} (largest finite "
                f"{torch.finfo(dtype).max:.6g}); rescale them or keep a wider dtype",
            )
        coords = self.coords.to(device=device)
        return SparseLatent(
            feats, coords, self.seqlens, modality=self.modality, meta=self.meta, validate=False
        )

    def replace(
        self,
        *,
        feats: torch.Tensor | None = None,
        modality: str | Sequence[str] | None = None,
        meta: Sequence[Mapping[str, Any]] | None = None,
    ) -> SparseLatent:
        """A copy with new feats (same N, any C), modality names or metadata."""
        new_feats = self.feats if feats is None else feats
        if feats is not None:
            self._validate_tensors(new_feats, self.coords, self.seqlens)
        return SparseLatent(
            new_feats,
            self.coords,
            self.seqlens,
            modality=self.modality if modality is None else modality,
            meta=self.meta if meta is None else meta,
            validate=False,
        )

    def equal(self, other: SparseLatent) -> bool:
        """Exact equality of every tensor, name and metadata entry."""
        return (
            isinstance(other, SparseLatent)
            and self.feats.shape == other.feats.shape
            and self.feats.dtype == other.feats.dtype
            and torch.equal(self.feats, other.feats)
            and torch.equal(self.coords, other.coords)
            and torch.equal(self.seqlens, other.seqlens)
            and self.modality == other.modality
            and self.meta == other.meta
        )
