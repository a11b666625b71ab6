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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from atoken.core.errors import LatentValidationError, StoreError, StoreIntegrityError
from atoken.core.latent import SparseLatent
from atoken.core.storage import (
    ATTRS_KEY,
    StoreLike,
    check_schema,
    open_group,
    read_rows,
    require_array,
    store_label,
)
from atoken.core.tokens import DiscreteTokens

__all__ = ["SCHEMA", "SCHEMA_VERSION", "LatentStore", "read_box", "write_latents"]

SCHEMA = "atoken.latents"
SCHEMA_VERSION = 1
_INDEX_CHUNK = 4096
_AXES = {"t": 0, "x": 1, "y": 2, "z": 3}
_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "float16": (torch.float16, np.dtype(np.float16)),
    "float32": (torch.float32, np.dtype(np.float32)),
    "bfloat16": (torch.bfloat16, np.dtype(np.uint16)),  # zarr has no bfloat16: keep the bits
}
Box = Mapping[str, tuple[int | None, int | None]]


def _dtype_name(dtype: str | torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise LatentValidationError("feats", f"store dtype must be one of {list(_DTYPES)}: {dtype}")
    return name


def _to_numpy(feats: torch.Tensor, name: str) -> np.ndarray:
    x = feats.detach().cpu().to(_DTYPES[name][0])
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise LatentValidationError("feats", f"values overflow {name}; store them as float32")
    return x.view(torch.int16).numpy().view(np.uint16) if name == "bfloat16" else x.numpy()


def _from_numpy(arr: np.ndarray, name: str) -> torch.Tensor:
    if name == "bfloat16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _raster_order(coords: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Row order sorting by (sample, t, z, y, x)."""
    return np.lexsort((coords[:, 1], coords[:, 2], coords[:, 3], coords[:, 0], sample))


def _t_index(coords: np.ndarray, seqlens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, cumulative token counts by t: ``(t_offsets [M], t_lengths [B])``."""
    parts, lengths, start = [], [], 0
    for n in seqlens.tolist():
        t = coords[start : start + n, 0]
        counts = np.bincount(t, minlength=int(t.max()) + 1 if n else 0)
        parts.append(np.concatenate([[0], np.cumsum(counts)]))
        lengths.append(len(parts[-1]))
        start += n
    flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return flat, np.asarray(lengths, dtype=np.int64)


def _create(group: zarr.Group, C: int, name: str, ids: torch.Tensor | None, chunk: int, shard):
    rows = {"chunks": (chunk, max(C, 1))} | (
        {"shards": (chunk * shard, max(C, 1))} if shard else {}
    )
    codecs = [ZstdCodec(level=1), Crc32cCodec()]
    group.create_array("feats", shape=(0, C), dtype=_DTYPES[name][1], compressors=codecs, **rows)
    rows4 = {"chunks": (chunk, 4)} | ({"shards": (chunk * shard, 4)} if shard else {})
    group.create_array("coords", shape=(0, 4), dtype="int32", compressors=codecs, **rows4)
    G = 0
    if ids is not None:
        G = int(ids.shape[1])
        rows_g = {"chunks": (chunk, max(G, 1))} | (
            {"shards": (chunk * shard, max(G, 1))} if shard else {}
        )
        dt = str(ids.dtype).removeprefix("torch.")
        group.create_array("ids", shape=(0, G), dtype=dt, compressors=codecs, **rows_g)
    index = {"chunks": (_INDEX_CHUNK,), "compressors": [ZstdCodec(level=1)]}
    for key in ("offsets", "t_starts"):
        group.create_array(key, shape=(1,), dtype="int64", fill_value=0, **index)
    group.create_array("t_offsets", shape=(0,), dtype="int64", **index)
    group.create_array("modality", shape=(0,), dtype=str, chunks=(_INDEX_CHUNK,))
    group.create_array("meta", shape=(0,), dtype=str, chunks=(_INDEX_CHUNK,))
    group.attrs[ATTRS_KEY] = {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "committed": 0,
        "tokens": 0,
        "t_rows": 0,
        "channels": C,
        "feats_dtype": name,
        "id_groups": G,
    }


def write_latents(
    latent: SparseLatent,
    url: StoreLike,
    *,
    dtype: str | torch.dtype | None = None,
    ids: torch.Tensor | None = None,
    storage_options: Mapping[str, Any] | None = None,
    mode: str = "w",
    chunk_tokens: int = 1024,
    shard_chunks: int | None = 64,
) -> int:
    """Write ``latent`` (and its ``ids [N, G]``) to a latent store; returns the committed count.

    ``mode="w"`` replaces the store, ``"a"`` appends (creating it if needed; channels, dtype
    and id groups must match). ``dtype`` defaults to the latent's own.

    Raises:
        LatentValidationError: an unsupported dtype, an overflow, or ids of the wrong shape.
        StoreError: appending latents that do not match the store.
    """
    if mode not in ("w", "a"):
        raise StoreError(f"mode must be 'w' or 'a', got {mode!r}", store=store_label(url))
    name = _dtype_name(dtype if dtype is not None else latent.dtype)
    N, C = latent.num_tokens, latent.channels
    if ids is not None and (ids.ndim != 2 or ids.shape[0] != N or ids.is_floating_point()):
        raise LatentValidationError("ids", f"must be int [{N}, G], got {tuple(ids.shape)}")
    label = store_label(url)
    group = open_group(url, storage_options, mode=mode)
    if ATTRS_KEY not in group.attrs:
        _create(group, C, name, ids, int(chunk_tokens), shard_chunks)
    info = check_schema(group, SCHEMA, (SCHEMA_VERSION,), store=label)
    G = 0 if ids is None else int(ids.shape[1])
    theirs = (info["channels"], info["feats_dtype"], info["id_groups"])
    if theirs != (C, name, G):
        raise StoreError(
            f"holds (channels, dtype, id groups) = {theirs}, cannot append {(C, name, G)}",
            store=label,
        )
    B0, N0, M0 = (int(info[k]) for k in ("committed", "tokens", "t_rows"))
    seqlens = latent.seqlens.cpu().numpy()
    coords = latent.coords.cpu().numpy()
    order = _raster_order(coords, np.repeat(np.arange(len(seqlens)), seqlens))
    coords = coords[order]
    t_off, t_len = _t_index(coords, seqlens)
    columns: dict[str, tuple[int, np.ndarray]] = {
        "feats": (N0, _to_numpy(latent.feats, name)[order]),
        "coords": (N0, coords),
        "offsets": (B0 + 1, N0 + np.cumsum(seqlens)),
        "t_offsets": (M0, t_off),
        "t_starts": (B0 + 1, M0 + np.cumsum(t_len)),
        "modality": (B0, np.array(latent.modality, dtype=object)),
        "meta": (B0, np.array([json.dumps(m, sort_keys=True) for m in latent.meta], object)),
    }
    if ids is not None:
        columns["ids"] = (N0, ids.detach().cpu().numpy()[order])
    # rows first, then the per-sample index (dict order), then the commit
    for key, (start, values) in columns.items():
        arr = group[key]
        arr.resize((start + len(values), *arr.shape[1:]))
        if len(values):
            arr[start:] = values
    B1 = B0 + latent.batch_size
    group.attrs[ATTRS_KEY] = {**info, "committed": B1, "tokens": N0 + N, "t_rows": M0 + len(t_off)}
    return B1


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
        """The FSQ ids as :class:`~atoken.core.tokens.DiscreteTokens`.

        Raises:
            StoreError: the store holds no ids.
        """
        if "ids" not in self.arrays:
            raise StoreError(
                "holds no ids (written from a continuous latent)", store=self.url, array="ids"
            )
        latent, extra = self.read(indices, box=box, fields=("ids",))
        return DiscreteTokens.from_parts(extra["ids"], latent)


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
