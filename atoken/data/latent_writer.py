"""Writing latent stores: :class:`LatentWriter` appends SparseLatents (and FSQ ids).

The layout and commit protocol are :mod:`atoken.data.latent_store`'s: rows first, then the
per-sample index, then ``committed`` in one atomic write. Where a writer may write, the lock
it holds and how ``overwrite`` replaces a store (written aside, swapped in on success) are
:mod:`atoken.data.ownership`'s.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from atoken.core.errors import LatentValidationError, StoreError
from atoken.core.latent import SparseLatent
from atoken.data.latent_store import DTYPES, SCHEMA, SCHEMA_VERSION, LatentStore
from atoken.data.ownership import writing
from atoken.data.storage import ATTRS_KEY, StoreLike, check_schema, open_group, store_label

__all__ = ["LatentWriter", "write_latents"]

_INDEX_CHUNK = 4096


def _dtype_name(dtype: str | torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise LatentValidationError("feats", f"store dtype must be one of {list(DTYPES)}: {dtype}")
    return name


def _to_numpy(feats: torch.Tensor, name: str) -> np.ndarray:
    x = feats.detach().cpu().to(DTYPES[name][0])
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise LatentValidationError("feats", f"values overflow {name}; store them as float32")
    return x.view(torch.int16).numpy().view(np.uint16) if name == "bfloat16" else x.numpy()


def _meta_json(meta: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each sample's meta as JSON, before anything is written."""
    out = []
    for b, m in enumerate(meta):
        try:
            out.append(json.dumps(m, sort_keys=True, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise LatentValidationError(
                "meta",
                f"sample {b} cannot be stored as JSON ({exc}): keep meta to numbers, "
                "strings, lists and dicts",
            ) from exc
    return out


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


def _create_arrays(
    group: zarr.Group, info: Mapping[str, Any], ids_dtype: str | None, chunk: int, shard: int | None
) -> None:
    """Create the arrays a store without committed samples lacks."""
    C, G, have = int(info["channels"]), int(info["id_groups"]), set(group.keys())
    codecs = [ZstdCodec(level=1), Crc32cCodec()]

    def rows(width: int) -> dict[str, Any]:
        w = max(width, 1)
        return {"chunks": (chunk, w), "compressors": codecs} | (
            {"shards": (chunk * shard, w)} if shard else {}
        )

    index = {"chunks": (_INDEX_CHUNK,), "compressors": codecs}  # checksummed too
    specs: dict[str, dict[str, Any]] = {
        "feats": {"shape": (0, C), "dtype": DTYPES[info["feats_dtype"]][1], **rows(C)},
        "coords": {"shape": (0, 4), "dtype": "int32", **rows(4)},
        "offsets": {"shape": (1,), "dtype": "int64", "fill_value": 0, **index},
        "t_starts": {"shape": (1,), "dtype": "int64", "fill_value": 0, **index},
        "t_offsets": {"shape": (0,), "dtype": "int64", **index},
        "modality": {"shape": (0,), "dtype": str, **index},
        "meta": {"shape": (0,), "dtype": str, **index},
    }
    if G:
        specs["ids"] = {"shape": (0, G), "dtype": ids_dtype or "int64", **rows(G)}
    for name, spec in specs.items():
        if name not in have:
            group.create_array(name, **spec)


class LatentWriter:
    """Append :class:`SparseLatent` batches (and their FSQ ids) to a latent store.

    The writer holds the store's lock from construction to :meth:`close` (use it as a context
    manager). It writes only where :mod:`atoken.data.ownership` allows: a missing path, an
    empty folder or a latent store (appended to). ``overwrite`` writes a new store aside and
    swaps it in at a clean close, so a failed or killed write leaves the previous store as it
    was; it never replaces a path that is or contains one of ``sources``. ``dtype`` defaults
    to each latent's own; channels, dtype and id groups must match the store's.

    Raises:
        StoreError: the destination holds anything but a latent store, or is a source.
        StoreLockedError: another writer holds the store.
    """

    def __init__(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        dtype: str | torch.dtype | None = None,
        overwrite: bool = False,
        sources: Sequence[str | os.PathLike] = (),
        lock_timeout: float = 0.0,
        chunk_tokens: int = 1024,
        shard_chunks: int | None = 64,
    ) -> None:
        self.label = store_label(url)
        self.dtype = None if dtype is None else _dtype_name(dtype)
        self.chunk_tokens, self.shard_chunks = int(chunk_tokens), shard_chunks
        self.storage_options = storage_options
        self._stack: ExitStack | None = ExitStack()
        target = self._stack.enter_context(
            writing(
                url,
                storage_options,
                schema=SCHEMA,
                overwrite=overwrite,
                sources=sources,
                lock_timeout=lock_timeout,
            )
        )
        self.url, self.group, self.info = target.url, None, None
        try:
            if target.state == "append":
                self.group = open_group(self.url, storage_options, mode="a")
                self.info = check_schema(self.group, SCHEMA, (SCHEMA_VERSION,), store=self.label)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            self._stack = None
            raise

    @property
    def committed(self) -> int:
        """Samples committed so far."""
        return 0 if self.info is None else int(self.info["committed"])

    def reader(self) -> LatentStore | None:
        """A reader of what the store held when the writer opened it (None if nothing)."""
        return LatentStore(self.url, self.storage_options) if self.committed else None

    def add(self, latent: SparseLatent, ids: torch.Tensor | None = None) -> int:
        """Append ``latent`` (and its ``ids [N, G]``); returns the committed count.

        Raises:
            LatentValidationError: an unsupported dtype, an overflow, meta that is not JSON,
                or ids of the wrong shape.
            StoreError: latents that do not match the store (channels, dtype, id groups).
        """
        if self._stack is None:
            raise StoreError("the writer is closed", store=self.label)
        name = self.dtype or _dtype_name(latent.dtype)
        N, C = latent.num_tokens, latent.channels
        if ids is not None and (ids.ndim != 2 or ids.shape[0] != N or ids.is_floating_point()):
            raise LatentValidationError("ids", f"must be int [{N}, G], got {tuple(ids.shape)}")
        G = 0 if ids is None else int(ids.shape[1])
        meta = _meta_json(latent.meta)
        feats = _to_numpy(latent.feats, name)  # overflow raised before any write
        if self.group is None:  # attributes first: they mark the store as atoken's
            info = {
                "schema": SCHEMA,
                "version": SCHEMA_VERSION,
                "committed": 0,
                "tokens": 0,
                "t_rows": 0,
                "channels": C,
                "feats_dtype": name,
                "id_groups": G,
            }
            self.group = open_group(
                self.url, self.storage_options, mode="a", attributes={ATTRS_KEY: info}
            )
            self.info = check_schema(self.group, SCHEMA, (SCHEMA_VERSION,), store=self.label)
        info = self.info
        theirs = (info["channels"], info["feats_dtype"], info["id_groups"])
        if theirs != (C, name, G):
            raise StoreError(
                f"holds (channels, dtype, id groups) = {theirs}, cannot append {(C, name, G)}",
                store=self.label,
            )
        group = self.group
        if not self.committed:  # new, or a writer killed while creating the arrays
            ids_dtype = None if ids is None else str(ids.dtype).removeprefix("torch.")
            _create_arrays(group, info, ids_dtype, self.chunk_tokens, self.shard_chunks)
        B0, N0, M0 = (int(info[k]) for k in ("committed", "tokens", "t_rows"))
        seqlens = latent.seqlens.cpu().numpy()
        coords = latent.coords.cpu().numpy()
        order = _raster_order(coords, np.repeat(np.arange(len(seqlens)), seqlens))
        coords = coords[order]
        t_off, t_len = _t_index(coords, seqlens)
        columns: dict[str, tuple[int, np.ndarray]] = {
            "feats": (N0, feats[order]),
            "coords": (N0, coords),
            "offsets": (B0 + 1, N0 + np.cumsum(seqlens)),
            "t_offsets": (M0, t_off),
            "t_starts": (B0 + 1, M0 + np.cumsum(t_len)),
            "modality": (B0, np.array(latent.modality, dtype=object)),
            "meta": (B0, np.array(meta, dtype=object)),
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
        self.info = {**info, "committed": B1, "tokens": N0 + N, "t_rows": M0 + len(t_off)}
        group.attrs[ATTRS_KEY] = self.info
        return B1

    def close(self) -> int:
        """Swap in a replacement and release the lock; returns the committed count."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()
        return self.committed

    def __enter__(self) -> LatentWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.__exit__(exc_type, exc, tb)


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
    sources: Sequence[str | os.PathLike] = (),
) -> int:
    """Write ``latent`` (and its ``ids [N, G]``) to a latent store; returns the committed count.

    ``mode="w"`` writes a new store, replacing a latent store already there (written aside and
    swapped in, so a failure leaves the old one); ``"a"`` appends, creating the store if
    needed. Either writes only into a missing path, an empty folder or a latent store.

    Raises:
        LatentValidationError: an unsupported dtype, an overflow, meta that is not JSON, or
            ids of the wrong shape.
        StoreError: ``mode`` is not ``w``/``a``; the destination holds anything but a latent
            store, or latents that do not match. StoreLockedError: another writer holds it.
    """
    if mode not in ("w", "a"):
        raise StoreError(f"mode must be 'w' or 'a', got {mode!r}", store=store_label(url))
    with LatentWriter(
        url,
        storage_options,
        dtype=dtype,
        overwrite=mode == "w",
        sources=sources,
        chunk_tokens=chunk_tokens,
        shard_chunks=shard_chunks,
    ) as writer:
        writer.add(latent, ids)
    return writer.committed
