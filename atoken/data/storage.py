"""Zarr v3 stores on any filesystem fsspec reaches, with safe writes and typed errors.

Local paths and ``file://`` URLs open as zarr's ``LocalStore``, which writes every key to a
temporary file and renames it into place, so a process killed mid-write leaves each chunk
and each ``zarr.json`` either old or new, never half written. Other URLs (``memory://``,
``s3://``, ``gs://``, any installed fsspec protocol) open as ``FsspecStore``; object stores
replace whole objects atomically too. That atomicity is what the commit protocols of the
dataset and latent stores rely on (data first, then the index, then a committed count).

Every store written by atoken keeps its schema under one attribute key of the root group::

    attrs["atoken"] = {"schema": "atoken.media" | "atoken.latents", "version": 1, ...}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from atoken.core.errors import StoreError, StoreIntegrityError, StoreSchemaError

__all__ = [
    "ATTRS_KEY",
    "StoreLike",
    "check_schema",
    "is_local",
    "local_path",
    "open_group",
    "open_store",
    "read_rows",
    "require_array",
    "store_label",
]

#: The root-group attribute that holds atoken's schema name, version and commit state.
ATTRS_KEY = "atoken"

#: A URL or path (``str``/``os.PathLike``) or an already built zarr ``Store``.
StoreLike = str | os.PathLike | Store


def store_label(url: StoreLike) -> str:
    """How errors name a store: its URL or path, or the store's repr."""
    return os.fspath(url) if isinstance(url, (str, os.PathLike)) else repr(url)


def local_path(url: StoreLike) -> Path | None:
    """The local folder of a plain path or ``file://`` URL, else None."""
    if isinstance(url, os.PathLike):
        return Path(url)
    if not isinstance(url, str):
        return None
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url or "::" in url:
        return None
    return Path(url)


def is_local(url: StoreLike) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return local_path(url) is not None


def open_store(
    url: StoreLike, storage_options: Mapping[str, Any] | None = None, *, read_only: bool = False
) -> Store:
    """A zarr store for ``url``: ``LocalStore`` for paths and ``file://``, else ``FsspecStore``.

    Raises:
        StoreError: the URL's protocol is not installed or its options are rejected.
    """
    if isinstance(url, Store):  # used as given (e.g. a wrapper that records reads)
        return url
    path = local_path(url)
    if path is not None:
        return zarr.storage.LocalStore(path, read_only=read_only)
    try:
        return zarr.storage.FsspecStore.from_url(
            os.fspath(url), storage_options=dict(storage_options or {}), read_only=read_only
        )
    except (ImportError, ValueError, TypeError) as exc:
        raise StoreError(
            f"cannot open the URL through fsspec ({type(exc).__name__}: {exc})",
            store=store_label(url),
        ) from exc


def open_group(
    url: StoreLike,
    storage_options: Mapping[str, Any] | None = None,
    *,
    mode: str = "r",
    attributes: Mapping[str, Any] | None = None,
) -> zarr.Group:
    """The root group of ``url`` (mode ``r``, ``r+``, ``a`` or ``w``); a group it creates
    gets ``attributes`` in its first metadata write.

    Raises:
        StoreError: the store does not exist (``r``/``r+``) or is not a zarr v3 group.
    """
    store = open_store(url, storage_options, read_only=mode == "r")
    try:
        return zarr.open_group(
            store=store,
            mode=mode,
            zarr_format=3,
            attributes=None if attributes is None else dict(attributes),
        )
    except FileNotFoundError as exc:
        path = local_path(url)
        what = (
            "does not exist"
            if path is not None and not os.path.exists(path)
            else "is not an atoken store: it holds no zarr.json (not a zarr group)"
        )
        raise StoreError(what, store=store_label(url)) from exc
    except (ValueError, TypeError, KeyError) as exc:  # wrong format, unreadable metadata
        raise StoreError(
            f"not a readable zarr v3 group ({type(exc).__name__}: {exc})", store=store_label(url)
        ) from exc


def check_schema(
    group: zarr.Group, schema: str, versions: tuple[int, ...], *, store: str
) -> dict[str, Any]:
    """The group's ``attrs["atoken"]`` after checking its schema name and version.

    Raises:
        StoreSchemaError: no atoken attributes, another schema, or an unknown version.
    """
    info = group.attrs.get(ATTRS_KEY)
    if not isinstance(info, Mapping):
        raise StoreSchemaError(
            f"is not a store written by atoken: a zarr group without {ATTRS_KEY!r} attributes",
            store=store,
        )
    if info.get("schema") != schema:
        raise StoreSchemaError(
            f"holds schema {info.get('schema')!r}, expected {schema!r}",
            store=store,
            array="attributes",
        )
    if info.get("version") not in versions:
        raise StoreSchemaError(
            f"{schema} schema version {info.get('version')!r} is unknown to this atoken "
            f"(it reads versions {', '.join(map(str, versions))}); upgrade atoken",
            store=store,
            array="attributes",
        )
    return dict(info)


def require_array(
    group: zarr.Group, name: str, *, store: str, committed: int, min_length: int
) -> zarr.Array:
    """The array ``name``, holding at least ``min_length`` rows.

    Raises:
        StoreIntegrityError: the array is missing or shorter than the committed index needs.
    """
    samples = f"0..{committed - 1}" if committed else "none committed"
    try:
        array = group[name]
    except KeyError as exc:
        raise StoreIntegrityError(
            "index array is missing", store=store, array=name, sample=samples
        ) from exc
    if not isinstance(array, zarr.Array):
        raise StoreIntegrityError("is a group, not an array", store=store, array=name)
    if array.shape[0] < min_length:
        raise StoreIntegrityError(
            f"holds {array.shape[0]} rows but the committed index needs {min_length}",
            store=store,
            array=name,
            sample=samples,
        )
    return array


def read_rows(
    array: zarr.Array,
    start: int,
    stop: int,
    *,
    store: str,
    sample: int | str | None = None,
    name: str | None = None,
) -> np.ndarray:
    """``array[start:stop]``, with a damaged chunk raised as :class:`StoreIntegrityError`."""
    try:
        return np.asarray(array[start:stop])
    except Exception as exc:  # zarr/numcodecs raise many types for a damaged chunk
        raise StoreIntegrityError(
            f"cannot read rows {start}..{stop}: corrupt or truncated chunk "
            f"({type(exc).__name__}: {exc})",
            store=store,
            array=array.basename,
            sample=sample,
            name=name,
        ) from exc
