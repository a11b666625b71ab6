"""The file format of sharded checkpoints: ``torch.distributed.checkpoint`` storage that never
unpickles what a checkpoint folder holds.

Stock DCP writes the folder's index, ``.metadata``, with ``pickle.dump`` and reads it back with
``pickle.load``, and loads every non-tensor item (the optimizer's ``param_groups``) with
``torch.load(weights_only=False)``: a tampered folder runs code on resume. Here:

    .metadata        JSON (:func:`metadata_to_json`): every tensor's dtype, global shape and
                     chunks, the non-tensor keys, where each item's bytes are
                     (file, offset, length); ``"format": "atoken-dcp"`` marks it
    __<rank>_0.distcp  as DCP writes it: each tensor and each non-tensor item a ``torch.save``
                     blob, read with ``torch.load(weights_only=True)``

:class:`SafeWriter`, :class:`SafeReader` and :class:`SafeLoadPlanner` are what
:mod:`atoken.engine.sharded_checkpoint` hands ``dcp.save``/``dcp.load``. A ``.metadata`` in
another format (a pickle of atoken < 0.5 or of another program) is refused with a
:class:`~atoken.engine.checkpoint.CheckpointError`; ``atoken checkpoint upgrade --trust PATH``
rewrites a trusted one (:func:`upgrade`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import ReadItem

from atoken.engine.checkpoint import CheckpointError, fsync_dir

__all__ = [
    "FORMAT",
    "METADATA",
    "SafeLoadPlanner",
    "SafeReader",
    "SafeWriter",
    "check_files",
    "metadata_from_json",
    "metadata_to_json",
    "read_metadata",
    "upgrade",
]

#: The marker of the JSON index; the file keeps DCP's name.
FORMAT = "atoken-dcp"
METADATA = ".metadata"
_VERSION = 1


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"not a torch dtype: {name!r}")
    return value


def _ints(value: Any, what: str) -> torch.Size:
    if not isinstance(value, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    ):
        raise ValueError(f"{what} must be a list of ints >= 0, got {value!r}")
    return torch.Size(value)


def metadata_to_json(md: Metadata) -> dict[str, Any]:
    """DCP's index as plain JSON data (what :class:`SafeWriter` writes)."""
    tensors, blobs = {}, []
    for fqn, item in md.state_dict_metadata.items():
        if isinstance(item, BytesStorageMetadata):
            blobs.append(fqn)
            continue
        p = item.properties
        if p.layout != torch.strided:
            raise CheckpointError(f"{fqn}: only strided tensors are saved, not {p.layout}")
        tensors[fqn] = {
            "dtype": str(p.dtype).removeprefix("torch."),
            "requires_grad": bool(p.requires_grad),
            "size": list(item.size),
            "chunks": [{"offsets": list(c.offsets), "sizes": list(c.sizes)} for c in item.chunks],
        }
    storage = [
        {
            "fqn": index.fqn,
            "offset": None if index.offset is None else list(index.offset),
            "index": index.index,
            "file": info.relative_path,
            "start": info.offset,
            "length": info.length,
            "transforms": info.transform_descriptors,
        }
        for index, info in (md.storage_data or {}).items()
    ]
    planner = md.planner_data if isinstance(md.planner_data, dict) else {}
    return {
        "format": FORMAT,
        "version": _VERSION,
        "dcp_version": md.version,
        "tensors": tensors,
        "bytes": blobs,
        "paths": {k: list(v) for k, v in planner.items()},
        "storage": storage,
    }


def metadata_from_json(data: Any) -> Metadata:
    """Rebuild DCP's index from :func:`metadata_to_json`'s data.

    Raises:
        ValueError: the data is not that format (a missing key, a wrong type).
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not an {FORMAT!r} index")
    if data.get("version") != _VERSION:
        raise ValueError(f"index version {data.get('version')!r}; this atoken reads {_VERSION}")
    entries: dict[str, Any] = {}
    for fqn, t in data["tensors"].items():
        props = TensorProperties(dtype=_dtype(t["dtype"]), requires_grad=bool(t["requires_grad"]))
        chunks = [
            ChunkStorageMetadata(
                offsets=_ints(c["offsets"], f"{fqn} offsets"), sizes=_ints(c["sizes"], fqn)
            )
            for c in t["chunks"]
        ]
        entries[fqn] = TensorStorageMetadata(props, _ints(t["size"], fqn), chunks)
    for fqn in data["bytes"]:
        entries[str(fqn)] = BytesStorageMetadata()
    storage = {}
    for s in data["storage"]:
        offset = None if s["offset"] is None else _ints(s["offset"], f"{s['fqn']} offset")
        index = s["index"]
        if index is not None and not isinstance(index, int):
            raise ValueError(f"{s['fqn']}: index must be an int or null")
        name, start, length = s["file"], s["start"], s["length"]
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise ValueError(f"{s['fqn']}: file must be a plain name in the folder, got {name!r}")
        _ints([start, length], f"{s['fqn']} start and length")
        transforms = s["transforms"]
        if transforms is not None and not all(isinstance(x, str) for x in transforms):
            raise ValueError(f"{s['fqn']}: transforms must be a list of names")
        storage[MetadataIndex(str(s["fqn"]), offset, index)] = _StorageInfo(
            relative_path=name, offset=start, length=length, transform_descriptors=transforms
        )
    paths = {str(k): tuple(v) for k, v in data["paths"].items()}
    return Metadata(
        state_dict_metadata=entries,
        planner_data=paths,
        storage_data=storage,
        storage_meta=StorageMeta(),
        version=data.get("dcp_version"),
    )


def read_metadata(folder: Path) -> Metadata:
    """The JSON index of the sharded checkpoint ``folder`` (nothing is unpickled).

    Raises:
        CheckpointError: no index, a damaged one, or one in another format (a pickle: the
            message says how to upgrade a trusted checkpoint).
    """
    path = Path(folder) / METADATA
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(
            f"sharded checkpoint {str(folder)!r}: its index {METADATA} is unreadable "
            f"({exc.strerror or exc}); the folder is damaged"
        ) from exc
    if raw[:1] == b"\x80":  # a pickle protocol >= 2 header: stock DCP's index
        raise CheckpointError(
            f"sharded checkpoint {str(folder)!r}: {METADATA} is a pickle (stock "
            "torch.distributed.checkpoint, or atoken < 0.5), which can run code when read, so "
            "atoken does not read it. If you trust where this folder came from, convert it "
            f"with: atoken checkpoint upgrade --trust {folder}"
        )
    try:
        return metadata_from_json(json.loads(raw.decode("utf-8")))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"sharded checkpoint {str(folder)!r}: {METADATA} is damaged or not atoken's "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def check_files(folder: Path, md: Metadata) -> None:
    """Every data file the index names exists and holds the bytes it points at.

    Raises:
        CheckpointError: a missing or truncated file, named.
    """
    ends: dict[str, int] = {}
    for info in md.storage_data.values():
        ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    for name, end in sorted(ends.items()):
        try:
            size = (Path(folder) / name).stat().st_size
        except OSError as exc:
            raise CheckpointError(
                f"sharded checkpoint {str(folder)!r}: {name} is missing ({exc.strerror or exc})"
            ) from exc
        if size < end:
            raise CheckpointError(
                f"sharded checkpoint {str(folder)!r}: {name} is truncated ({size} bytes, the "
                f"index needs {end})"
            )


class SafeWriter(dcp.FileSystemWriter):
    """DCP's file-system writer with the index written as JSON (:func:`metadata_to_json`)."""

    def finish(self, metadata: Metadata, results: list[list[Any]]) -> None:
        metadata.storage_data = {wr.index: wr.storage_data for rs in results for wr in rs}
        folder = Path(self.path)
        tmp = folder / f"{METADATA}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(metadata_to_json(metadata), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / METADATA)
        fsync_dir(folder)


class SafeReader(dcp.FileSystemReader):
    """DCP's file-system reader that reads the JSON index only (:func:`read_metadata`) and
    checks that the data files hold what it points at before anything is read."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        md = read_metadata(Path(self.path))
        check_files(Path(self.path), md)
        md.storage_meta = StorageMeta(load_id=self.load_id)
        return md


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner with non-tensor items read by ``torch.load(weights_only=True)``
    (numbers, strings, lists, dicts; stock DCP uses ``weights_only=False``)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        safe = io.BytesIO()
        torch.save(obj, safe)  # the parent stores what it loads: hand it the vetted object
        safe.seek(0)
        # the parent's torch.load(weights_only=False) now reads bytes made here from plain data
        super().load_bytes(read_item, safe)


def upgrade(folder: Path) -> Path:
    """Rewrite a trusted sharded checkpoint's pickled index as JSON; returns the index path.

    This unpickles the old index: run it only on a folder whose origin you trust.

    Raises:
        CheckpointError: no index, or one that is not DCP's.
    """
    path = Path(folder) / METADATA
    try:
        with open(path, "rb") as f:
            md = pickle.load(f)  # the user vouched for this folder (--trust)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise CheckpointError(f"cannot read {str(path)!r} as a pickled DCP index: {exc}") from exc
    if not isinstance(md, Metadata):
        raise CheckpointError(f"{str(path)!r} is not a DCP index (a {type(md).__name__})")
    tmp = path.with_name(f"{METADATA}.tmp")
    tmp.write_text(json.dumps(metadata_to_json(md)), encoding="utf-8")
    os.replace(tmp, path)
    return path
