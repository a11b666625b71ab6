"""One writer per store: a lock beside the store, held from the ownership check to the commit.

The lock is a hidden sibling ``.NAME.atoken-lock`` (beside, not inside, so it also guards a
store that does not exist yet and one being swapped for its replacement). It records who
holds it::

    {"pid": 4242, "host": "box-1", "since": "2026-12-02T03:04:05Z"}

* Local paths take an ``fcntl.flock`` on that file: the kernel releases it when the holder
  exits, however it dies, so a lock is never stale. The file itself stays (removing a flock
  file races with a waiting writer); it is empty of meaning while unlocked.
* fsspec URLs create it with an exclusive create (``mode="xb"``, a conditional write on
  object stores that support it) and delete it on release. A writer killed while holding it
  leaves it behind. A marker whose holder ran on this host under a pid that no longer runs is
  stale: it is removed and the lock taken. One of another host cannot be checked from here:
  the error names the holder, and the marker is removed by hand once no writer runs.

A second writer waits up to ``timeout`` seconds (default 0: it fails at once) and then
raises :class:`~atoken.core.errors.StoreLockedError`, naming the holder.

A process forked while holding a lock (a data-loader worker) is not its holder: the child
closes its copy of the descriptor at once (``os.register_at_fork``), so the lock goes with
the holder's death even while such children linger, and a child's ``release`` touches
nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import posixpath
import socket
import time
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import fsspec
from zarr.abc.store import Store

from atoken.core.errors import StoreLockedError
from atoken.data.storage import StoreLike, local_path, store_label

__all__ = ["StoreLock"]

_POLL = 0.05  # seconds between attempts while waiting
_HELD: weakref.WeakSet[StoreLock] = weakref.WeakSet()  # the locks this process holds


def _forget_in_child() -> None:
    """In a forked child: drop the parent's locks (close the copied descriptors; an flock
    stays with the parent's own descriptor) so the child never holds or releases them."""
    for lock in list(_HELD):
        if lock._fd is not None:
            os.close(lock._fd)
        lock._fd, lock._marker = None, None
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _holder() -> bytes:
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()


def _stale(raw: bytes) -> bool:
    """Whether a marker's holder ran on this host under a pid that no longer exists."""
    try:
        info = json.loads(raw.decode())
        pid, host = int(info["pid"]), str(info["host"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"process {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another writer"


class StoreLock:
    """Exclusive write access to the store at ``url`` (a context manager).

    Raises:
        StoreLockedError: another writer holds it for more than ``timeout`` seconds.
    """

    def __init__(
        self,
        url: StoreLike,
        storage_options: Mapping[str, Any] | None = None,
        *,
        timeout: float = 0.0,
    ) -> None:
        self.url, self.timeout = url, float(timeout)
        self.storage_options = dict(storage_options or {})
        self._fd: int | None = None
        self._marker: tuple[Any, str] | None = None

    def _lock_path(self, path: str) -> str:
        parent, name = posixpath.split(path.rstrip("/"))
        return posixpath.join(parent, f".{name}.atoken-lock")

    def _try_local(self, folder: str) -> str | None:
        path = self._lock_path(os.path.abspath(folder))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 4096, 0)
            os.close(fd)
            return _describe(raw)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder(), 0)
        self._fd = fd
        _HELD.add(self)
        return None

    def _try_marker(self) -> str | None:
        fs, path = fsspec.core.url_to_fs(os.fspath(self.url), **self.storage_options)
        marker = self._lock_path(path)
        try:
            with fs.open(marker, "xb") as f:
                f.write(_holder())
        except FileExistsError:
            try:
                raw = fs.cat_file(marker)
            except FileNotFoundError:  # released meanwhile: try again
                return "another writer"
            if _stale(raw):  # its holder died on this host: take it over on the next try
                fs.rm(marker)
                return "a writer that died (its stale marker was removed)"
            return _describe(raw)
        self._marker = (fs, marker)
        _HELD.add(self)
        return None

    def acquire(self) -> StoreLock:
        """Take the lock, waiting up to ``timeout`` seconds."""
        if isinstance(self.url, Store):  # no path to lock: in-place stores are unguarded
            return self
        folder = local_path(self.url)
        deadline = time.monotonic() + self.timeout
        while True:
            held_by = self._try_local(os.fspath(folder)) if folder else self._try_marker()
            if held_by is None:
                return self
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"another writer holds it ({held_by}); wait for it to finish, or retry "
                    "with a wait (--wait SECONDS, lock_timeout=) to queue behind it",
                    store=store_label(self.url),
                    holder=held_by,
                )
            time.sleep(_POLL)

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""
        _HELD.discard(self)
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._marker is not None:
            fs, marker = self._marker
            self._marker = None
            fs.rm(marker)

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
