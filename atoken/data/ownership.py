"""Where atoken may write a store, one writer at a time, and replacing a store without loss.

The rule (``docs/security.md``, "Stores"): a write goes only into

* a missing path,
* an empty folder, or
* a store of the same schema that atoken wrote (identified by ``attrs["atoken"]["schema"]``).

Anything else (a folder of user files, a zarr group atoken did not write, a store of another
kind, a file) is a :class:`~atoken.core.errors.StoreError` naming the path, before anything
is written. ``overwrite`` replaces only a store of the same schema, and never a path that is,
or contains, a source being read.

A replacement is **written aside**, into a hidden sibling ``.NAME.atoken-new-XXXXXXXX``, and
swapped in when complete: the old store is renamed to ``.NAME.atoken-old-XXXXXXXX``, the new
one renamed into place, the old one removed. A failed write removes its aside copy, so the
previous store is left as it was; a write killed mid-swap is mended by the next writer
(:func:`recover`: the old store is restored if the new one never arrived).

One writer at a time: :func:`writing` holds a :class:`~atoken.data.store_lock.StoreLock` on
the path from the ownership check to the swap, so concurrent writers never interleave.

Stores passed as zarr ``Store`` objects (not URLs) have no path: they are written in place,
after the same ownership check, without a lock or an aside copy.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import fsspec
from zarr.abc.store import Store

from atoken.core.errors import StoreError, StoreSchemaError
from atoken.data.storage import ATTRS_KEY, StoreLike, open_group, store_label
from atoken.data.store_lock import StoreLock

__all__ = ["WriteTarget", "check_target", "recover", "writing"]

_GLOB = "*?["
_LISTED = 4  # entries an error names when a folder holds files atoken did not write


@attrs.frozen
class WriteTarget:
    """Where a writer writes: ``url`` (the store itself, or its aside copy) and ``state``:
    ``"new"`` (a missing path or an empty folder), ``"append"`` (an atoken store of the
    same schema) or ``"replace"`` (an aside copy swapped in when the write succeeds)."""

    url: StoreLike
    state: str


def _fs(url: StoreLike, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """``(filesystem, path)`` of a URL or local path."""
    try:
        return fsspec.core.url_to_fs(os.fspath(url), **dict(storage_options or {}))
    except (ImportError, ValueError, TypeError) as exc:
        raise StoreError(
            f"cannot open the URL through fsspec ({type(exc).__name__}: {exc})",
            store=store_label(url),
        ) from exc


def _url_of(fs: Any, path: str, like: StoreLike) -> str:
    """A URL for ``path`` on ``fs`` in the form of ``like`` (a plain path stays a path)."""
    text = os.fspath(like)
    return path if "://" not in text else fs.unstrip_protocol(path)


def _schema_of(url: StoreLike, storage_options: Mapping[str, Any] | None) -> str | None:
    """The atoken schema a zarr group declares, ``""`` for a foreign group, None for none."""
    try:
        group = open_group(url, storage_options, mode="r")
    except StoreError:
        return None
    info = group.attrs.get(ATTRS_KEY)
    return str(info.get("schema", "")) if isinstance(info, Mapping) else ""


def _is_within(inner: str, outer: str) -> bool:
    """True when ``inner`` is ``outer`` or a path under it (both absolute, normalized)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _source_root(source: str) -> str:
    """The folder part of a source before any glob (``photos/*.jpg`` -> ``photos``)."""
    cut = min((source.index(c) for c in _GLOB if c in source), default=None)
    if cut is None:
        return source
    return posixpath.dirname(source[:cut]) or "."


def check_target(
    url: StoreLike,
    storage_options: Mapping[str, Any] | None = None,
    *,
    schema: str,
    overwrite: bool = False,
    sources: Sequence[str | os.PathLike] = (),
) -> str:
    """Whether a writer of ``schema`` may write to ``url``: ``"new"``, ``"append"`` or
    ``"replace"`` (an atoken store of ``schema`` and ``overwrite``).

    Raises:
        StoreError: ``url`` holds something else (named), or it is or contains one of
            ``sources``.
    """
    label = store_label(url)
    if isinstance(url, Store):
        found = _schema_of(url, None)
        if found is None:
            return "new"
        if found != schema:
            raise StoreSchemaError(_foreign(found, schema), store=label)
        return "replace" if overwrite else "append"
    fs, path = _fs(url, storage_options)
    target = posixpath.normpath(path)
    for source in sources:
        src_fs, src = _fs(_source_root(os.fspath(source)), storage_options)
        if type(src_fs) is type(fs) and _is_within(posixpath.normpath(src), target):
            raise StoreError(
                f"is (or contains) the source {os.fspath(source)!r} being read: write the "
                "store somewhere else",
                store=label,
            )
    if not fs.exists(path):
        return "new"
    if not fs.isdir(path):
        raise StoreError(
            "is a file, not a store or a folder: atoken will not replace it", store=label
        )
    entries = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    if not entries:
        return "new"
    found = _schema_of(url, storage_options)
    if found == schema:
        return "replace" if overwrite else "append"
    if found is None:
        shown = ", ".join(entries[:_LISTED]) + (", ..." if len(entries) > _LISTED else "")
        raise StoreError(
            f"holds files atoken did not write ({shown}): atoken writes a store only into a "
            "missing path, an empty folder or a store of its own, and --overwrite does not "
            "change that",
            store=label,
        )
    raise StoreSchemaError(_foreign(found, schema), store=label)


def _foreign(found: str, schema: str) -> str:
    what = f"an {found!r} store" if found else "a zarr group atoken did not write"
    return (
        f"holds {what}, not an {schema!r} store: atoken will not write into or replace it "
        "(--overwrite replaces only a store of the same kind)"
    )


def _siblings(fs: Any, path: str, kind: str) -> list[str]:
    parent, name = posixpath.split(path.rstrip("/"))
    pattern = posixpath.join(parent, f".{name}.atoken-{kind}-*")
    return sorted(fs.glob(pattern))


def recover(url: StoreLike, storage_options: Mapping[str, Any] | None = None) -> None:
    """Mend what a killed replacement left beside ``url`` (call it holding the lock): the old
    store comes back if the new one never arrived; aside copies are removed."""
    if isinstance(url, Store):
        return
    fs, path = _fs(url, storage_options)
    olds = _siblings(fs, path, "old")
    if olds and not fs.exists(path):
        fs.mv(olds.pop(), path, recursive=True)
    for leftover in _siblings(fs, path, "new") + olds:
        fs.rm(leftover, recursive=True)


@contextmanager
def writing(
    url: StoreLike,
    storage_options: Mapping[str, Any] | None = None,
    *,
    schema: str,
    overwrite: bool = False,
    sources: Sequence[str | os.PathLike] = (),
    lock_timeout: float = 0.0,
) -> Iterator[WriteTarget]:
    """Lock ``url``, check that a ``schema`` store may be written there, and yield the
    :class:`WriteTarget`. A replacement is swapped in when the block exits cleanly and
    discarded when it raises (the old store stays as it was).

    Raises:
        StoreError: see :func:`check_target`. StoreLockedError: another writer holds the
            store for longer than ``lock_timeout`` seconds.
    """
    with StoreLock(url, storage_options, timeout=lock_timeout):
        recover(url, storage_options)
        state = check_target(
            url, storage_options, schema=schema, overwrite=overwrite, sources=sources
        )
        if state != "replace" or isinstance(url, Store):
            yield WriteTarget(url, state)
            return
        fs, path = _fs(url, storage_options)
        parent, name = posixpath.split(path.rstrip("/"))
        tag = uuid.uuid4().hex[:8]
        aside = posixpath.join(parent, f".{name}.atoken-new-{tag}")
        try:
            yield WriteTarget(_url_of(fs, aside, url), "replace")
        except BaseException:
            if fs.exists(aside):
                fs.rm(aside, recursive=True)
            raise
        old = posixpath.join(parent, f".{name}.atoken-old-{tag}")
        fs.mv(path, old, recursive=True)
        fs.mv(aside, path, recursive=True)
        fs.rm(old, recursive=True)
