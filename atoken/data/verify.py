"""Check a media store end to end: the schema, the whole index, and every sample's checksum.

A damaged store raises :class:`~atoken.core.errors.StoreIntegrityError` (or
``StoreSchemaError``) naming the store, the array and the sample. With ``skip_bad=True`` a
damaged *sample* is recorded and the check goes on; the report lists what was skipped. A
damaged index or schema cannot be skipped: without it no sample can be located.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from atoken.core.errors import StoreIntegrityError
from atoken.data.storage import StoreLike
from atoken.data.store import MediaStore

__all__ = ["VerifyReport", "verify_store"]


@attrs.frozen(kw_only=True)
class VerifyReport:
    """The outcome of :func:`verify_store`.

    ``bad`` holds one ``(index, name, message)`` per skipped sample (only with ``skip_bad``).
    """

    store: str
    samples: int
    bytes_checked: int
    bad: tuple[tuple[int, str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """True when every sample passed."""
        return not self.bad


def verify_store(
    url: StoreLike,
    storage_options: Mapping[str, Any] | None = None,
    *,
    skip_bad: bool = False,
    progress: bool = False,
) -> VerifyReport:
    """Read every committed sample of a media store and check its checksum.

    Raises:
        StoreError: the store is missing. StoreSchemaError: unknown schema or version.
        StoreIntegrityError: a bad index, or (without ``skip_bad``) the first bad sample.
    """
    from tqdm.auto import tqdm

    store = MediaStore(url, storage_options)  # reads and checks the index arrays
    store.check_arrays()  # captions and labels: a damaged chunk raises, naming the array
    bad: list[tuple[int, str, str]] = []
    checked = 0
    for i in tqdm(range(len(store)), unit="sample", disable=not progress):
        try:
            checked += store.read(i, verify=True).nbytes
        except StoreIntegrityError as exc:
            if not skip_bad:
                raise
            bad.append((i, store.names[i], str(exc)))
    return VerifyReport(store=store.url, samples=len(store), bytes_checked=checked, bad=tuple(bad))
