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
                       "sample_axes": ["H", "W", "C"], "committed": n, "label_names": [...]}

Sample dtypes. Version 1 stores hold uint8 samples and have no ``dtype`` key. A store of
float16 or float32 samples is version 2 and records ``"dtype": "float16"`` or ``"float32"``;
a float sample is stored as its little-endian bytes. The version bump makes an older atoken
refuse a float store instead of reading its bytes as pixels. This reader accepts both.

Commit protocol: a writer appends the data of a batch of samples, then extends the index
arrays, then rewrites ``committed`` (one atomic ``zarr.json`` write). Readers trust only the
first ``committed`` samples, so an interrupted writer leaves a store that opens and holds only
whole samples; the uncommitted tail is overwritten when the writer resumes.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from atoken.core.errors import ConfigError, StoreError, StoreIntegrityError, StoreSchemaError
from atoken.core.storage import (
    ATTRS_KEY,
    StoreLike,
    check_schema,
    local_path,
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
    "MediaWriter",
    "StoreLayout",
]

SCHEMA = "atoken.media"
SCHEMA_VERSION = 1  # what uint8 stores are written as
SCHEMA_VERSIONS = (1, 2)  # what this atoken reads; float stores are written as version 2
DTYPES = ("uint8", "float16", "float32")
_INDEX_CHUNK = 4096
_WRITER_ARRAYS = ("data", "offsets", "shapes", "checksums", "names", "captions", "labels")


def checksum(flat: np.ndarray) -> int:
    """The CRC-32 (zlib) of an array's bytes, as stored in ``checksums``."""
    return zlib.crc32(np.ascontiguousarray(flat).data) & 0xFFFFFFFF


def _sample_dtype(dtype: Any) -> np.dtype:
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


def _stored_dtype(info: Mapping[str, Any], *, store: str) -> np.dtype:
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


def _positive(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be a positive int, got {value!r}")


@attrs.frozen(kw_only=True)
class StoreLayout:
    """Chunking of a new media store (an existing store keeps its own).

    ``chunk_bytes`` is the unit a reader fetches and decodes; ``shard_chunks`` chunks form
    one stored object (file or S3 key), so a million samples do not make a million files.
    """

    chunk_bytes: int = attrs.field(default=1 << 18, validator=_positive)
    shard_chunks: int = attrs.field(default=64, validator=_positive)
    compression: str = attrs.field(default="zstd", validator=attrs.validators.in_(("zstd", "none")))
    level: int = 1

    @property
    def shard_bytes(self) -> int:
        return self.chunk_bytes * self.shard_chunks


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
        self.dtype: np.dtype = _stored_dtype(info, store=self.url)
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

    def _bytes(self, i: int, lo: int, hi: int) -> np.ndarray:
        """``data[lo:hi]`` of sample ``i``: uint8, raising if damaged or short."""
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


class MediaWriter:
    """Append samples to a media store, resuming an existing one.

    Samples are buffered and committed about once per shard (``layout.shard_bytes``) or every
    ``flush_samples`` samples, whichever comes first. Use as a context manager: a clean exit
    commits the buffer; an exception leaves only the already committed samples.

    ``dtype`` is the samples' dtype, one of :data:`DTYPES`; a float store is written as
    schema version 2 (see the module docstring).

    Raises:
        ConfigError: ``dtype`` is not one of :data:`DTYPES`.
        StoreSchemaError: the destination holds another schema or version.
        StoreError: ``overwrite`` is False and the destination holds a non-atoken group, or
            samples of another modality, axes or dtype.
    """

    def __init__(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        modality: str = "image",
        sample_axes: Sequence[str] = ("H", "W", "C"),
        dtype: str | np.dtype | type[np.generic] = "uint8",
        layout: StoreLayout | None = None,
        flush_samples: int = 256,
        overwrite: bool = False,
    ) -> None:
        self.dtype: np.dtype = _sample_dtype(dtype)  # before anything is created
        self.url = store_label(url)
        self.layout = layout or StoreLayout()
        self.flush_samples = max(1, int(flush_samples))
        group = open_group(url, storage_options, mode="w" if overwrite else "a")
        existing = set(group.keys())
        if ATTRS_KEY not in group.attrs and existing <= set(_WRITER_ARRAYS):
            for name in existing:  # a writer killed while creating the store: start over
                del group[name]
            self._create(group, modality, tuple(sample_axes))
        info = check_schema(group, SCHEMA, SCHEMA_VERSIONS, store=self.url)
        if info.get("modality") != modality or tuple(info["sample_axes"]) != tuple(sample_axes):
            raise StoreError(
                f"holds {info.get('modality')} samples {info.get('sample_axes')}, "
                f"cannot append {modality} samples {list(sample_axes)}",
                store=self.url,
            )
        stored = _stored_dtype(info, store=self.url)
        if stored != self.dtype:
            raise StoreError(
                f"holds {stored.name} samples, cannot append {self.dtype.name} samples "
                f"(pass dtype={stored.name!r} to append to it)",
                store=self.url,
            )
        self.group, self.info = group, info
        self.committed = int(info["committed"])
        reader = MediaStore(url, _group=group)  # validates the committed index
        self.names: set[str] = set(reader.names)
        self.label_names: list[str] = list(reader.label_names)
        self.data_end = int(reader.offsets[-1])
        self._arrays = {k: group[k] for k in _WRITER_ARRAYS}
        self._truncate_tail()
        folder = local_path(url)
        if folder is not None:  # temporary files a killed writer left (zarr writes, renames)
            for leftover in folder.rglob("*.partial"):
                leftover.unlink(missing_ok=True)
        self._pending: list[tuple[str, np.ndarray, str, str | None]] = []
        self._pending_bytes = 0

    def _create(self, group: zarr.Group, modality: str, axes: tuple[str, ...]) -> None:
        lay = self.layout
        codecs: list[Any] = [ZstdCodec(level=lay.level)] if lay.compression == "zstd" else []
        group.create_array(
            "data",
            shape=(0,),
            dtype="uint8",
            chunks=(lay.chunk_bytes,),
            shards=(lay.shard_bytes,),
            compressors=[*codecs, Crc32cCodec()],
            fill_value=0,
        )
        index = {"chunks": (_INDEX_CHUNK,), "compressors": [ZstdCodec(level=1)]}
        offsets = group.create_array("offsets", shape=(1,), dtype="int64", **index)
        offsets[:] = 0
        group.create_array(
            "shapes", shape=(0, len(axes)), dtype="int64", chunks=(_INDEX_CHUNK, len(axes))
        )
        group.create_array("checksums", shape=(0,), dtype="uint32", **index)
        group.create_array("names", shape=(0,), dtype=str, chunks=(_INDEX_CHUNK,))
        group.create_array("captions", shape=(0,), dtype=str, chunks=(_INDEX_CHUNK,))
        group.create_array("labels", shape=(0,), dtype="int32", fill_value=-1, **index)
        info: dict[str, Any] = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "modality": modality,
            "sample_axes": list(axes),
            "committed": 0,
            "label_names": [],
        }
        if self.dtype != np.uint8:  # uint8 stores stay exactly version 1
            info.update(version=2, dtype=self.dtype.name)
        group.attrs[ATTRS_KEY] = info

    def _truncate_tail(self) -> None:
        """Drop whatever an interrupted writer left past the committed index."""
        n = self.committed
        for name, arr in self._arrays.items():
            length = {"data": self.data_end, "offsets": n + 1}.get(name, n)
            if arr.shape[0] != length:
                arr.resize((length, *arr.shape[1:]))

    def __enter__(self) -> MediaWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.flush()

    def add(
        self, name: str, sample: np.ndarray, *, caption: str = "", label: str | None = None
    ) -> bool:
        """Buffer one sample (of the store's dtype, shaped along ``sample_axes``); False if
        ``name`` is already stored (a resumed import skips it).

        Raises:
            ConfigError: a sample of the wrong dtype or rank, or float values that are not
                finite (NaN or infinity).
        """
        if name in self.names:
            return False
        sample = np.asarray(sample)
        same = sample.dtype.kind == self.dtype.kind and sample.dtype.itemsize == self.dtype.itemsize
        if not same or sample.ndim != len(self.info["sample_axes"]):
            raise ConfigError(
                f"{name!r}: samples must be {self.dtype.name} with axes "
                f"{self.info['sample_axes']}, got {sample.dtype} {sample.shape}"
            )
        if self.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(sample))
            if bad.size:
                at = np.unravel_index(int(bad[0]), sample.shape)
                raise ConfigError(
                    f"{name!r}: {bad.size} non-finite values (NaN or infinity), the first "
                    f"{sample[at]} at {tuple(int(v) for v in at)}"
                )
        stored = np.ascontiguousarray(sample, dtype=self.dtype.newbyteorder("<"))
        self.names.add(name)
        self._pending.append((name, stored, caption or "", label))
        self._pending_bytes += stored.nbytes
        if (
            self._pending_bytes >= self.layout.shard_bytes
            or len(self._pending) >= self.flush_samples
        ):
            self.flush()
        return True

    def flush(self) -> int:
        """Write and commit the buffered samples; returns the committed count."""
        if not self._pending:
            return self.committed
        g, n0 = self._arrays, self.committed
        n1 = n0 + len(self._pending)
        raw = [s.reshape(-1).view(np.uint8) for _, s, _, _ in self._pending]  # stored bytes
        sizes = np.array([r.size for r in raw], dtype=np.int64)
        start, end = self.data_end, self.data_end + int(sizes.sum())
        # 1. data
        if end > start:
            g["data"].resize((end,))
            g["data"][start:end] = np.concatenate(raw)
        # 2. index
        for label in (lab for *_, lab in self._pending if lab is not None):
            if label not in self.label_names:
                self.label_names.append(label)
        columns = {
            "offsets": start + np.cumsum(sizes),
            "shapes": np.array([s.shape for _, s, _, _ in self._pending], dtype=np.int64),
            "checksums": np.array([checksum(r) for r in raw], np.uint32),
            "names": np.array([n for n, *_ in self._pending], dtype=object),
            "captions": np.array([c for _, _, c, _ in self._pending], dtype=object),
            "labels": np.array(
                [-1 if lab is None else self.label_names.index(lab) for *_, lab in self._pending],
                dtype=np.int32,
            ),
        }
        for name, values in columns.items():
            arr = g[name]
            lo = n0 + 1 if name == "offsets" else n0
            arr.resize((lo + len(values), *arr.shape[1:]))
            arr[lo:] = values
        # 3. commit: readers see the new samples only after this one atomic write
        self.info = {**self.info, "committed": n1, "label_names": list(self.label_names)}
        self.group.attrs[ATTRS_KEY] = self.info
        self.committed, self.data_end = n1, end
        self._pending, self._pending_bytes = [], 0
        return n1
