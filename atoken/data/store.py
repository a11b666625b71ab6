"""The media store: ragged samples (images, videos, depth maps...) in one zarr v3 group.

Layout (schema ``atoken.media``), for n committed samples of dtype ``dtype`` (itemsize s)::

    data        uint8 [D]           every sample's bytes back to back, chunked and sharded
    offsets     int64 [n + 1]       byte offsets: sample i is data[offsets[i]:offsets[i + 1]]
    shapes      int64 [n, A]        its shape along ``sample_axes`` (images: H, W, C), so
                                    offsets[i + 1] - offsets[i] == s * prod(shapes[i])
    checksums   uint32 [n]          zlib CRC-32 of its stored bytes
    names       str [n]             its source name (unique; resuming skips names present)
    captions    str [n]             optional, "" when a sample has none
    labels      int32 [n]           optional, -1 when a sample has none; ``label_names`` names them
    attrs["atoken"] = {"schema": "atoken.media", "version": 1, "modality": "image",
                       "sample_axes": ["H", "W", "C"], "committed": n,
                       "data_bytes": offsets[n], "label_names": [...]}

Every index array's chunks carry a CRC-32C, like ``data``'s. ``data_bytes`` is written with
``committed`` and witnesses it: a count changed by hand no longer ends where the data does.

Sample dtypes. Version 1 stores hold uint8 samples and have no ``dtype`` key. A store of
float16 or float32 samples is version 2 and records ``"dtype": "float16"`` or ``"float32"``;
a float sample is stored as its little-endian bytes. The version bump makes an older atoken
refuse a float store instead of reading its bytes as pixels. This reader accepts both.

Commit protocol: a writer appends the data of a batch of samples, then extends the index
arrays, then rewrites ``committed`` (one atomic ``zarr.json`` write). Readers trust only the
first ``committed`` samples, so an interrupted writer leaves a store that opens and holds only
whole samples; the uncommitted tail is overwritten when the writer resumes. Writing is
:mod:`atoken.data.media_writer` (:class:`~atoken.data.media_writer.MediaWriter`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from atoken.core.errors import ConfigError, StoreIntegrityError, StoreSchemaError
from atoken.data.storage import (
    StoreLike,
    check_schema,
    open_group,
    read_rows,
    require_array,
    store_label,
)

__all__ = [
    "DTYPES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "MediaStore",
    "sample_dtype",
    "stored_dtype",
]

SCHEMA = "atoken.media"
SCHEMA_VERSION = 1  # what uint8 stores are written as
SCHEMA_VERSIONS = (1, 2)  # what this atoken reads; float stores are written as version 2
DTYPES = ("uint8", "float16", "float32")


def checksum(flat: np.ndarray) -> int:
    """The CRC-32 (zlib) of an array's bytes, as stored in ``checksums``."""
    return zlib.crc32(np.ascontiguousarray(flat).data) & 0xFFFFFFFF


def sample_dtype(dtype: Any) -> np.dtype:
    """The native numpy dtype for a ``dtype`` argument, one of :data:`DTYPES`.

    Raises:
        ConfigError: anything else.
    """
    try:
        name = np.dtype(dtype).name
    except (TypeError, ValueError):
        name = None
    if name not in DTYPES or (isinstance(dtype, str) and dtype not in DTYPES):
        raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return np.dtype(name)


def stored_dtype(info: Mapping[str, Any], *, store: str) -> np.dtype:
    """The sample dtype a store's attributes record (uint8 when they record none).

    Raises:
        StoreSchemaError: an unknown dtype, or a float dtype in a version 1 store.
    """
    name = info.get("dtype", "uint8")
    if name not in DTYPES or (name != "uint8" and info.get("version") == 1):
        raise StoreSchemaError(
            f"records sample dtype {name!r} in a version {info.get('version')} store; "
            f"version 1 holds uint8, version 2 one of {list(DTYPES)}",
            store=store,
            array="attributes",
        )
    return np.dtype(name)


class MediaStore:
    """Read-only view of the committed samples of a media store.

    Opening checks the schema and the whole index (cheap: it is a few numbers per sample);
    sample bytes are read on demand. Not safe to share across processes: open one per worker.

    Raises:
        StoreError: the store does not exist. StoreSchemaError: unknown schema or version.
        StoreIntegrityError: a missing index array or an index that disagrees with the data.
    """

    def __init__(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        _group: zarr.Group | None = None,
    ) -> None:
        self.url = store_label(url)
        self.group = _group if _group is not None else open_group(url, storage_options, mode="r")
        info = check_schema(self.group, SCHEMA, SCHEMA_VERSIONS, store=self.url)
        self.info = info
        self.dtype: np.dtype = stored_dtype(info, store=self.url)
        self._le = self.dtype.newbyteorder("<")  # the stored byte order
        self.modality: str = info.get("modality", "image")
        self.sample_axes: tuple[str, ...] = tuple(info.get("sample_axes", ("H", "W", "C")))
        self.label_names: tuple[str, ...] = tuple(info.get("label_names", ()))
        n = int(info.get("committed", 0))
        self.committed = n
        req = {"store": self.url, "committed": n}
        self.data = require_array(self.group, "data", min_length=0, **req)
        self.offsets = read_rows(
            require_array(self.group, "offsets", min_length=n + 1, **req), 0, n + 1, store=self.url
        ).astype(np.int64)
        self.shapes = read_rows(
            require_array(self.group, "shapes", min_length=n, **req), 0, n, store=self.url
        ).astype(np.int64)
        self.checksums = read_rows(
            require_array(self.group, "checksums", min_length=n, **req), 0, n, store=self.url
        ).astype(np.int64)
        self.names: tuple[str, ...] = tuple(
            str(s)
            for s in read_rows(
                require_array(self.group, "names", min_length=n, **req), 0, n, store=self.url
            )
        )
        self._optional = {k: self.group[k] for k in ("captions", "labels") if k in self.group}
        self._present: set[int] = set()  # data shards known to exist
        self._check_index()

    def _check_index(self) -> None:
        n, A = self.committed, len(self.sample_axes)
        if self.shapes.shape != (n, A):
            raise StoreIntegrityError(
                f"has shape {self.shapes.shape}, expected ({n}, {A}) for axes {self.sample_axes}",
                store=self.url,
                array="shapes",
                sample=f"0..{n - 1}",
            )
        bad = np.flatnonzero((self.shapes < 0).any(axis=1)) if n else np.zeros(0, np.int64)
        if bad.size:
            i = int(bad[0])
            raise StoreIntegrityError(
                f"negative shape {self.shapes[i].tolist()}", **self._where("shapes", i)
            )
        if int(self.offsets[0]) != 0:
            raise StoreIntegrityError("offsets[0] must be 0", **self._where("offsets", 0))
        witness = self.info.get("data_bytes")  # written with committed (stores since 0.2)
        if witness is not None and int(witness) != int(self.offsets[-1]):
            raise StoreIntegrityError(
                f"committed = {n} samples end at byte {int(self.offsets[-1])}, but the commit "
                f"recorded {int(witness)} bytes of data: the committed count was changed",
                store=self.url,
                array="attributes",
            )
        sizes = np.prod(self.shapes, axis=1) * self.dtype.itemsize if n else np.zeros(0, np.int64)
        wrong = np.flatnonzero(np.diff(self.offsets) != sizes)
        if wrong.size:
            i = int(wrong[0])
            raise StoreIntegrityError(
                f"offsets give {int(self.offsets[i + 1] - self.offsets[i])} bytes but the shape "
                f"{self.shapes[i].tolist()} needs {int(sizes[i])}: the index disagrees with "
                "the data",
                **self._where("offsets", i),
            )
        end, length = int(self.offsets[-1]), int(self.data.shape[0])
        if end > length:
            i = int(np.searchsorted(self.offsets, length, side="right")) - 1
            raise StoreIntegrityError(
                f"the index needs {end} bytes but the data array holds {length}: the index "
                "disagrees with the data",
                **self._where("data", max(i, 0)),
            )

    def _where(self, array: str, i: int) -> dict[str, Any]:
        name = self.names[i] if 0 <= i < len(self.names) else None
        return {"store": self.url, "array": array, "sample": i, "name": name}

    def __len__(self) -> int:
        return self.committed

    def __repr__(self) -> str:
        return (
            f"MediaStore({self.url!r}, modality={self.modality!r}, dtype={self.dtype.name!r}, "
            f"samples={self.committed})"
        )

    def shape(self, i: int) -> tuple[int, ...]:
        """Sample ``i``'s shape along ``sample_axes``."""
        return tuple(int(v) for v in self.shapes[self._check(i)])

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.committed:
            raise IndexError(f"sample {i} out of range for {self.committed} samples in {self.url}")
        return i

    def _require_shards(self, i: int, lo: int, hi: int) -> None:
        """Raise if a stored object holding ``data[lo:hi]`` is missing (zarr would read its
        fill value: zeros), checking each shard once per reader. Stores written since 0.2
        (with ``data_bytes``) store every chunk, zeros included; older ones are not checked."""
        if hi <= lo or "data_bytes" not in self.info:  # older writers skipped zero chunks
            return
        size = int((self.data.shards or self.data.chunks)[0])
        for k in range(lo // size, (hi - 1) // size + 1):
            if k in self._present:
                continue
            key = f"{self.data.path}/{self.data.metadata.encode_chunk_key((k,))}"
            if not sync(self.data.store.exists(key)):
                raise StoreIntegrityError(
                    f"the data object {key!r} holding bytes {lo}..{hi} is missing (deleted or "
                    "never written): the store is incomplete",
                    **self._where("data", i),
                )
            self._present.add(k)

    def check_arrays(self) -> None:
        """Read every per-sample array (captions and labels too), so a damaged chunk raises.

        Raises:
            StoreIntegrityError: an unreadable chunk (a checksum failure), naming the array.
        """
        for name, arr in self._optional.items():
            read_rows(arr, 0, self.committed, store=self.url)
            if arr.shape[0] < self.committed:
                raise StoreIntegrityError(
                    f"holds {arr.shape[0]} rows for {self.committed} samples",
                    store=self.url,
                    array=name,
                )

    def _bytes(self, i: int, lo: int, hi: int) -> np.ndarray:
        """``data[lo:hi]`` of sample ``i``: uint8, raising if damaged, missing or short."""
        self._require_shards(i, lo, hi)
        flat = read_rows(self.data, lo, hi, store=self.url, sample=i, name=self.names[i])
        if flat.shape[0] != hi - lo:
            raise StoreIntegrityError(
                f"read {flat.shape[0]} bytes, expected {hi - lo} (truncated data)",
                **self._where("data", i),
            )
        return flat

    def _values(self, flat: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """Stored bytes as an array of ``self.dtype`` shaped ``shape``."""
        values = flat.view(self._le)
        if self._le != self.dtype:  # a big-endian machine
            values = values.astype(self.dtype)
        return values.reshape(shape)

    def read(self, i: int, *, verify: bool = True) -> np.ndarray:
        """Sample ``i`` as ``[H, W, C]`` (its ``sample_axes``) of ``self.dtype``, checksum
        verified.

        Raises:
            StoreIntegrityError: a damaged chunk or a checksum mismatch, naming the sample.
        """
        i = self._check(i)
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        flat = self._bytes(i, lo, hi)
        if verify:
            got, want = checksum(flat), int(self.checksums[i])
            if got != want:
                raise StoreIntegrityError(
                    f"checksum mismatch (stored {want:#010x}, computed {got:#010x}): corrupt "
                    "data or an index that disagrees with the data",
                    **self._where("data", i),
                )
        return self._values(flat, self.shapes[i])

    def read_rows(self, i: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of sample ``i``'s first axis, of ``self.dtype``, reading only
        their bytes (no checksum: it covers whole samples)."""
        i = self._check(i)
        shape = self.shapes[i]
        start, stop = max(0, int(start)), min(int(shape[0]), int(stop))
        stop = max(start, stop)
        row = int(np.prod(shape[1:])) * self.dtype.itemsize  # bytes per row
        lo = int(self.offsets[i]) + start * row
        flat = self._bytes(i, lo, lo + (stop - start) * row)
        return self._values(flat, (stop - start, *shape[1:]))

    def caption(self, i: int) -> str:
        """Sample ``i``'s caption ("" when the store or the sample has none)."""
        i = self._check(i)
        arr = self._optional.get("captions")
        return "" if arr is None else str(arr[i])

    def label(self, i: int) -> str | None:
        """Sample ``i``'s label name, or None."""
        i = self._check(i)
        arr = self._optional.get("labels")
        if arr is None:
            return None
        k = int(arr[i])
        return self.label_names[k] if 0 <= k < len(self.label_names) else None
