"""SparseLatents (and FSQ ids) in a zarr v3 store, read by sample and by coordinate box.

Layout (schema ``atoken.latents``, version 1), for B committed samples of N tokens::

    feats      [N, C]  float16 | float32 | bfloat16 (kept as uint16 bits), chunked by tokens
    coords     int32 [N, 4] (t, x, y, z)
    ids        int [N, G]     optional: FSQ ids, same rows as feats
    offsets    int64 [B + 1]  tokens of sample b are rows offsets[b]:offsets[b + 1]
    t_offsets  int64 [M]      per sample, T_b + 1 cumulative token counts by t (T_b = max t + 1)
    t_starts   int64 [B + 1]  sample b's entries are t_offsets[t_starts[b]:t_starts[b + 1]]
    modality   str [B]        modality name per sample
    meta       str [B]        JSON metadata per sample (tuples come back as lists)
    attrs["atoken"] = {"schema": "atoken.latents", "version": 1, "committed": B, "tokens": N,
                       "t_rows": M, "channels": C, "feats_dtype": "float16", "id_groups": G}

Each sample's tokens are stored in raster order, t slowest: sorted by (t, z, y, x). Frames
``t in [a, b)`` of sample b are then one contiguous row range, found from two entries of its
``t_offsets``, so a box query reads only the chunks of those rows. The commit protocol is the
media store's: rows first, then the per-sample index, then ``committed`` in one atomic write.
Writing is :class:`atoken.data.latent_writer.LatentWriter`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from atoken.core.errors import LatentValidationError, StoreError, StoreIntegrityError
from atoken.core.latent import SparseLatent
from atoken.core.tokens import DiscreteTokens
from atoken.data.storage import (
    StoreLike,
    check_schema,
    open_group,
    read_rows,
    require_array,
    store_label,
)

__all__ = ["DTYPES", "SCHEMA", "SCHEMA_VERSION", "LatentStore", "read_box", "read_latents"]

SCHEMA = "atoken.latents"
SCHEMA_VERSION = 1
_AXES = {"t": 0, "x": 1, "y": 2, "z": 3}
#: Stored dtypes of ``feats``: the torch dtype and the zarr array's numpy dtype.
DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float16": (torch.float16, np.dtype(np.float16)),
    "float32": (torch.float32, np.dtype(np.float32)),
    "bfloat16": (torch.bfloat16, np.dtype(np.uint16)),  # zarr has no bfloat16: keep the bits
}
Box = Mapping[str, tuple[int | None, int | None]]


def _from_numpy(arr: np.ndarray, name: str) -> torch.Tensor:
    if name == "bfloat16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(arr))


class LatentStore:
    """Read access to a latent store: samples by index, and coordinate-box queries.

    Raises:
        StoreSchemaError: unknown schema or version. StoreIntegrityError: a missing index
        array, an index that disagrees with the data, or a damaged chunk (naming the sample).
    """

    def __init__(self, url: StoreLike, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = store_label(url)
        self.group = open_group(url, storage_options, mode="r")
        info = check_schema(self.group, SCHEMA, (SCHEMA_VERSION,), store=self.url)
        self.info = info
        B, N, M = (int(info[k]) for k in ("committed", "tokens", "t_rows"))
        self.committed, self.channels = B, int(info["channels"])
        self.feats_dtype: str = info["feats_dtype"]
        req = {"store": self.url, "committed": B}
        self.arrays = {
            k: require_array(self.group, k, min_length=N, **req) for k in ("feats", "coords")
        }
        stored = self.arrays["feats"].dtype
        named = DTYPES.get(self.feats_dtype, (None, None))[1]
        if named is None or np.dtype(stored) != named:
            raise StoreIntegrityError(
                f"holds {np.dtype(stored).name} values but the attributes name feats_dtype "
                f"{self.feats_dtype!r} (stored as {getattr(named, 'name', None)}): relabelled "
                "attributes",
                store=self.url,
                array="feats",
            )
        if int(info.get("id_groups", 0)):
            self.arrays["ids"] = require_array(self.group, "ids", min_length=N, **req)
        for key in ("modality", "meta", "t_offsets"):
            self.arrays[key] = require_array(
                self.group, key, min_length=M if key == "t_offsets" else B, **req
            )
        self.offsets = self._index("offsets", B + 1, N, req)
        self.t_starts = self._index("t_starts", B + 1, M, req)

    def _index(self, key: str, length: int, end: int, req: dict) -> np.ndarray:
        arr = require_array(self.group, key, min_length=length, **req)
        values = read_rows(arr, 0, length, store=self.url).astype(np.int64)
        steps = np.diff(values)
        if values[0] != 0 or values[-1] != end or (steps < 0).any():
            bad = int(np.flatnonzero(steps < 0)[0]) if (steps < 0).any() else length - 2
            raise StoreIntegrityError(
                f"must rise from 0 to {end} (the committed rows), got {values[0]}..{values[-1]}: "
                "the index disagrees with the data",
                store=self.url,
                array=key,
                sample=max(bad, 0),
            )
        return values

    def __len__(self) -> int:
        return self.committed

    def _rows(self, i: int, box: Box | None) -> tuple[int, int]:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        if not box or box.get("t") is None:
            return lo, hi
        seg = read_rows(
            self.arrays["t_offsets"],
            int(self.t_starts[i]),
            int(self.t_starts[i + 1]),
            store=self.url,
            sample=i,
        )  # [T + 1]
        T = len(seg) - 1
        a, b = box["t"]
        a = 0 if a is None else min(max(int(a), 0), T)
        b = T if b is None else min(max(int(b), a), T)
        if seg[-1] != hi - lo:
            raise StoreIntegrityError(
                f"counts {int(seg[-1])} tokens but offsets give {hi - lo}",
                store=self.url,
                array="t_offsets",
                sample=i,
            )
        return lo + int(seg[a]), lo + int(seg[b])

    def read(
        self,
        indices: Sequence[int] | None = None,
        *,
        box: Box | None = None,
        fields: Sequence[str] = ("feats",),
    ) -> tuple[SparseLatent, dict[str, torch.Tensor]]:
        """Samples at ``indices`` (default all) restricted to ``box``: the latent, and the
        requested extra row fields (e.g. ``ids``) as tensors with the same rows."""
        idx = list(range(self.committed)) if indices is None else [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self.committed:
                raise IndexError(f"sample {i} out of range for {self.committed} in {self.url}")
        unknown = set(box or ()) - set(_AXES)
        if unknown:
            raise StoreError(
                f"box axes must be among t, x, y, z: {sorted(unknown)}", store=self.url
            )
        wanted = ["coords", *fields]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
        lens = []
        ranges = [self._rows(i, box) for i in idx]
        for run in _adjacent_runs(ranges):  # one read per run of back-to-back samples
            lo, hi = ranges[run[0]][0], ranges[run[-1]][1]
            where = idx[run[0]] if len(run) == 1 else f"{idx[run[0]]}..{idx[run[-1]]}"
            got = {
                k: read_rows(self.arrays[k], lo, hi, store=self.url, sample=where) for k in wanted
            }
            if any(len(v) != hi - lo for v in got.values()):
                raise StoreIntegrityError(
                    f"rows {lo}..{hi} are truncated", store=self.url, array="feats", sample=where
                )
            for p in run:
                rows = slice(ranges[p][0] - lo, ranges[p][1] - lo)
                keep = _box_mask(got["coords"][rows], box)
                for k in wanted:
                    parts[k].append(got[k][rows] if keep is None else got[k][rows][keep])
                lens.append(len(parts["coords"][-1]))
        cat = {k: np.concatenate(v) if v else self.arrays[k][:0] for k, v in parts.items()}
        modality, meta = self._names(idx)
        tensors = {
            k: _from_numpy(v, self.feats_dtype)
            if k == "feats"
            else torch.from_numpy(np.ascontiguousarray(v))
            for k, v in cat.items()
        }
        try:
            latent = SparseLatent(
                tensors["feats"] if "feats" in tensors else torch.zeros(len(cat["coords"]), 0),
                tensors["coords"],
                torch.tensor(lens, dtype=torch.int64),
                modality=modality,
                meta=meta,
            )
        except LatentValidationError as exc:
            raise StoreIntegrityError(
                f"read an invalid latent ({exc})",
                store=self.url,
                array=exc.field,
                sample=f"of {idx[:8]}",
            ) from exc
        return latent, {k: v for k, v in tensors.items() if k not in ("feats", "coords")}

    def _names(self, idx: list[int]) -> tuple[list[str], list[dict]]:
        if not idx:
            return [], []
        out: dict[str, list] = {}
        for key in ("modality", "meta"):
            arr = self.arrays[key]
            try:
                out[key] = [str(s) for s in arr.get_orthogonal_selection(np.asarray(idx))]
            except Exception as exc:  # a damaged chunk of the string index
                raise StoreIntegrityError(
                    f"unreadable ({type(exc).__name__}: {exc})",
                    store=self.url,
                    array=key,
                    sample=f"of {idx[:8]}",
                ) from exc
        return out["modality"], [json.loads(m) for m in out["meta"]]

    def meta(self, indices: Sequence[int] | None = None) -> list[dict]:
        """The metadata of the samples at ``indices`` (default all), without reading tokens."""
        idx = list(range(self.committed)) if indices is None else [int(i) for i in indices]
        return self._names(idx)[1]

    def latents(self, indices: Sequence[int] | None = None, *, box: Box | None = None):
        """The :class:`SparseLatent` of the samples at ``indices`` (see :meth:`read`)."""
        return self.read(indices, box=box)[0]

    def tokens(self, indices: Sequence[int] | None = None, *, box: Box | None = None):
        """The FSQ ids as :class:`~atoken.core.tokens.DiscreteTokens` (with the codebook
        sizes the samples' meta records, when they all agree).

        Raises:
            StoreError: the store holds no ids.
        """
        if "ids" not in self.arrays:
            raise StoreError(
                "holds no ids (written from a continuous latent)", store=self.url, array="ids"
            )
        latent, extra = self.read(indices, box=box, fields=("ids",))
        sizes = {tuple(m.get("codebook_sizes", ())) for m in latent.meta}
        known = sizes.pop() if len(sizes) == 1 else ()  # written by `atoken encode`
        return DiscreteTokens.from_parts(extra["ids"], latent, known)


def _adjacent_runs(ranges: list[tuple[int, int]]) -> list[list[int]]:
    """Group positions whose row ranges follow each other without a gap."""
    runs: list[list[int]] = []
    for p, (lo, _) in enumerate(ranges):
        if runs and ranges[runs[-1][-1]][1] == lo:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _box_mask(coords: np.ndarray, box: Box | None) -> np.ndarray | None:
    if not box:
        return None
    keep = np.ones(len(coords), dtype=bool)
    for axis, (a, b) in box.items():
        col = coords[:, _AXES[axis]]
        if a is not None:
            keep &= col >= a
        if b is not None:
            keep &= col < b
    return keep


def read_latents(
    url: StoreLike,
    indices: Sequence[int] | None = None,
    *,
    box: Box | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> SparseLatent:
    """The samples at ``indices`` (default all) of a zarr latent store (a path or fsspec URL),
    reading only their chunks; ``box`` (e.g. ``{"t": (a, b)}``, half-open) keeps the tokens
    inside it. The inverse of :func:`atoken.data.latent_writer.write_latents`.

    Raises:
        StoreError: not a latent store; StoreIntegrityError: a damaged index or chunk.
    """
    return LatentStore(url, storage_options).latents(indices, box=box)


def read_box(
    url: StoreLike,
    sample: int,
    *,
    t: tuple[int | None, int | None] | None = None,
    x: tuple[int | None, int | None] | None = None,
    y: tuple[int | None, int | None] | None = None,
    z: tuple[int | None, int | None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> SparseLatent:
    """The tokens of one sample inside a half-open coordinate box, e.g. frames
    ``t in [a, b)``: only the rows of those frames are read (then x, y, z filter them)."""
    box = {k: v for k, v in (("t", t), ("x", x), ("y", y), ("z", z)) if v is not None}
    return LatentStore(url, storage_options).latents([sample], box=box)
