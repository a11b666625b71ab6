"""Writing media stores: :class:`MediaWriter` appends samples, :class:`StoreLayout` chunks them.

The layout, the sample dtypes and the commit protocol are those of :mod:`atoken.data.store`
(its docstring): data first, then the index arrays, then ``committed`` in one atomic write, so
an interrupted writer leaves a store that holds only whole samples.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import attrs
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from atoken.core.errors import ConfigError, StoreError
from atoken.data.ownership import writing
from atoken.data.storage import (
    ATTRS_KEY,
    StoreLike,
    check_schema,
    local_path,
    open_group,
    store_label,
)
from atoken.data.store import (
    SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    MediaStore,
    checksum,
    sample_dtype,
    stored_dtype,
)

__all__ = ["MediaWriter", "StoreLayout"]

_INDEX_CHUNK = 4096
_WRITER_ARRAYS = ("data", "offsets", "shapes", "checksums", "names", "captions", "labels")


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


class MediaWriter:
    """Append samples to a media store, resuming an existing one.

    Samples are buffered and committed about once per shard (``layout.shard_bytes``) or every
    ``flush_samples`` samples, whichever comes first. Use as a context manager (or call
    :meth:`close`): a clean exit commits the buffer; an exception leaves only the already
    committed samples.

    The writer holds the store's lock from construction to close, so a second writer fails
    (or waits ``lock_timeout`` seconds). It writes only where
    :mod:`atoken.data.ownership` allows: a missing path, an empty folder or a media store.
    ``overwrite`` writes a new store aside and swaps it in at a clean close, so a failed or
    killed import leaves the previous store as it was; it never replaces a path that is or
    contains one of ``sources``.

    ``dtype`` is the samples' dtype, one of :data:`DTYPES`; a float store is written as
    schema version 2 (see the module docstring).

    Raises:
        ConfigError: ``dtype`` is not one of :data:`DTYPES`.
        StoreSchemaError: the destination holds another schema version.
        StoreError: the destination holds anything but a media store (files, a foreign zarr
            group, another kind of store), is or contains a source, or holds samples of
            another modality, axes or dtype.
        StoreLockedError: another writer holds the store.
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
        sources: Sequence[str | os.PathLike] = (),
        lock_timeout: float = 0.0,
    ) -> None:
        self.dtype: np.dtype = sample_dtype(dtype)  # before anything is created
        self.url = store_label(url)
        self.layout = layout or StoreLayout()
        self.flush_samples = max(1, int(flush_samples))
        self._pending: list[tuple[str, np.ndarray, str, str | None]] = []
        self._pending_bytes = 0
        self._stack: ExitStack | None = ExitStack()
        try:
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
            self._open(target.url, storage_options, target.state, modality, tuple(sample_axes))
        except BaseException:
            self._stack.__exit__(*sys.exc_info())  # discards an aside copy, releases the lock
            self._stack = None
            raise

    def _open(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None,
        state: str,
        modality: str,
        axes: tuple[str, ...],
    ) -> None:
        if state == "append":
            group = open_group(url, storage_options, mode="a")
        else:  # the attributes come first: they mark the store as atoken's from its first write
            group = open_group(
                url, storage_options, mode="a", attributes={ATTRS_KEY: self._info(modality, axes)}
            )
        info = check_schema(group, SCHEMA, SCHEMA_VERSIONS, store=self.url)
        if info.get("modality") != modality or tuple(info["sample_axes"]) != axes:
            raise StoreError(
                f"holds {info.get('modality')} samples {info.get('sample_axes')}, "
                f"cannot append {modality} samples {list(axes)}",
                store=self.url,
            )
        stored = stored_dtype(info, store=self.url)
        if stored != self.dtype:
            raise StoreError(
                f"holds {stored.name} samples, cannot append {self.dtype.name} samples "
                f"(pass dtype={stored.name!r} to append to it)",
                store=self.url,
            )
        if int(info["committed"]) == 0:  # new, or a writer killed while creating the arrays
            self._create(group, len(axes))
        self.group, self.info = group, info
        self.committed = int(info["committed"])
        reader = MediaStore(url, _group=group)  # validates the committed index
        self.names: set[str] = set(reader.names)
        self.label_names: list[str] = list(reader.label_names)
        self.data_end = int(reader.offsets[-1])
        self._arrays = {k: group[k] for k in _WRITER_ARRAYS}
        # every data chunk is stored, zeros too, so a reader can tell a missing shard
        self._arrays["data"] = self._arrays["data"].with_config({"write_empty_chunks": True})
        self._truncate_tail()
        folder = local_path(url)
        if folder is not None:  # temporary files a killed writer left (zarr writes, renames)
            for leftover in folder.rglob("*.partial"):
                leftover.unlink(missing_ok=True)

    def _info(self, modality: str, axes: tuple[str, ...]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "modality": modality,
            "sample_axes": list(axes),
            "committed": 0,
            "data_bytes": 0,
            "label_names": [],
        }
        if self.dtype != np.uint8:  # uint8 stores stay exactly version 1
            info.update(version=2, dtype=self.dtype.name)
        return info

    def _create(self, group: zarr.Group, rank: int) -> None:
        """Create the arrays a store without committed samples lacks."""
        lay, have = self.layout, set(group.keys())
        codecs: list[Any] = [ZstdCodec(level=lay.level)] if lay.compression == "zstd" else []
        checked = [ZstdCodec(level=1), Crc32cCodec()]  # a flipped byte fails the read
        index = {"chunks": (_INDEX_CHUNK,), "compressors": checked}
        specs: dict[str, dict[str, Any]] = {
            "data": {
                "shape": (0,),
                "dtype": "uint8",
                "chunks": (lay.chunk_bytes,),
                "shards": (lay.shard_bytes,),
                "compressors": [*codecs, Crc32cCodec()],
                "fill_value": 0,
            },
            "offsets": {"shape": (1,), "dtype": "int64", "fill_value": 0, **index},
            "shapes": {
                "shape": (0, rank),
                "dtype": "int64",
                "chunks": (_INDEX_CHUNK, rank),
                "compressors": checked,
            },
            "checksums": {"shape": (0,), "dtype": "uint32", **index},
            "names": {"shape": (0,), "dtype": str, **index},
            "captions": {"shape": (0,), "dtype": str, **index},
            "labels": {"shape": (0,), "dtype": "int32", "fill_value": -1, **index},
        }
        for name, spec in specs.items():
            if name not in have:
                group.create_array(name, **spec)

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
            self.close()
        elif self._stack is not None:  # keep what was committed (or the replaced store)
            stack, self._stack = self._stack, None
            stack.__exit__(exc_type, exc, tb)

    def close(self) -> int:
        """Commit the buffer, swap in a replacement, release the lock; the committed count."""
        if self._stack is None:
            return self.committed
        stack, self._stack = self._stack, None
        try:
            self.flush()
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        stack.close()
        return self.committed

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
        """Write and commit the buffered samples; returns the committed count.

        Raises:
            StoreError: the store cannot be written (a full disk, no permission); the
                samples committed before are intact and a rerun resumes after them.
        """
        if not self._pending:
            return self.committed
        try:
            return self._commit()
        except OSError as exc:
            raise StoreError(
                f"cannot write ({exc.strerror or exc}); the {self.committed} samples committed "
                "before are intact, and rerunning resumes after them",
                store=self.url,
                array="data",
            ) from exc

    def _commit(self) -> int:
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
        self.info = {
            **self.info,
            "committed": n1,
            "data_bytes": end,  # a witness: committed and the data must agree
            "label_names": list(self.label_names),
        }
        self.group.attrs[ATTRS_KEY] = self.info
        self.committed, self.data_end = n1, end
        self._pending, self._pending_bytes = [], 0
        return n1
