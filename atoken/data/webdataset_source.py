"""The ``webdataset`` data source: WebDataset tar shards, indexed once, read sample by sample.

    data = { source = "webdataset", urls = "shards/train-{000000..000127}.tar" }

``urls`` is one string in brace notation (``braceexpand``, as ``webdataset`` expands it) or a
list of them; each shard is a local path or any fsspec URL (``s3://bucket/train-000.tar``,
with ``storage_options``). Members are grouped into samples as WebDataset does (the key is the
name up to the first dot of the file name, ``webdataset.tariterators.base_plus_ext``); a sample
is read from its first member among ``keys`` (default ``jpg jpeg png webp npy``) and its
caption, if asked, from ``caption_key`` (``txt`` or ``json``).

Reading: every shard's members are listed once when the source is built (the stdlib
``tarfile`` reads the headers; ``offset, size`` of each member kept), then a sample is one
ranged read of its member (``fs.cat_file``), in whatever process asks for it. So the order is
:class:`~atoken.data.epoch_order.EpochOrder`'s, never a stream's: data workers and restarts
change nothing, and every training sample is seen once per epoch over all ranks. Shards must
be uncompressed tar files (``.tar``), which is what ``webdataset.ShardWriter`` and ``atoken
data import --format wds`` write.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from atoken.core.errors import BadSampleError, ConfigError
from atoken.data.indexed_source import IMAGE_KEYS, IndexedSource, decode_sample

__all__ = ["ShardIndex", "WebDatasetSource", "expand_urls", "index_shard"]


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Shard URLs from brace notation (``a-{000..009}.tar``) or a list of such strings.

    Raises:
        ConfigError: no URL.
    """
    from braceexpand import braceexpand

    items = [urls] if isinstance(urls, str) else list(urls)
    out = [u for item in items for u in braceexpand(str(item))]
    if not out:
        raise ConfigError("webdataset needs urls = shard paths or URLs (brace notation works)")
    return out


@attrs.frozen(kw_only=True)
class ShardIndex:
    """The samples of one shard: ``keys[i]`` has members ``members[i] = {ext: (offset,
    size)}``; ``problems`` holds the damage found while listing (a truncated member)."""

    url: str
    keys: tuple[str, ...]
    members: tuple[Mapping[str, tuple[int, int]], ...]
    problems: tuple[BadSampleError, ...] = ()


def _split_name(name: str) -> tuple[str | None, str | None]:
    from webdataset.tariterators import base_plus_ext

    return base_plus_ext(name)


def index_shard(url: str, storage_options: Mapping[str, Any] | None = None) -> ShardIndex:
    """List the samples of the tar shard ``url`` (headers only; no member is read).

    Raises:
        ConfigError: the shard is missing or is not an uncompressed tar file.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    try:
        total = fs.size(path)
    except FileNotFoundError:
        raise ConfigError(f"webdataset shard {url!r} does not exist") from None
    samples: dict[str, dict[str, tuple[int, int]]] = {}
    problems: list[BadSampleError] = []
    with fs.open(path, "rb") as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 (closed with f)
        except tarfile.TarError as exc:
            raise ConfigError(
                f"webdataset shard {url!r} is not an uncompressed tar file: {exc}"
            ) from exc
        try:
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = _split_name(info.name)
                if key is None or os.path.basename(key).startswith("__"):
                    continue
                if info.offset_data + info.size > total:
                    problems.append(
                        BadSampleError(
                            f"shard {url!r}, sample {key!r}: member {info.name!r} is truncated "
                            f"({total - info.offset_data} of {info.size} bytes)",
                            shard=url,
                            key=key,
                        )
                    )
                    samples.pop(key, None)
                    break
                samples.setdefault(key, {})[ext.lower()] = (info.offset_data, info.size)
        except tarfile.TarError as exc:  # a header cut short: the rest of the shard is lost
            problems.append(
                BadSampleError(f"shard {url!r}: unreadable after {len(samples)} samples: {exc}")
            )
    return ShardIndex(
        url=url,
        keys=tuple(samples),
        members=tuple(samples.values()),
        problems=tuple(problems),
    )


@attrs.define(kw_only=True, slots=False)
class WebDatasetSource(IndexedSource):
    """``webdataset``: samples of tar shards at ``urls`` (see the module docstring).

    Parameters beyond the shared ones (``batch_size``, ``crop_min``, ``crop_max``, ``resize``,
    ``shuffle``, ``heldout``, ``frames``, ``frame_stride``): ``urls``, ``storage_options``
    (fsspec), ``keys`` (sample extensions, first found is read: images, ``npy`` or clips such
    as ``mp4``), ``caption_key`` ("" or ``txt``/``json``) and ``modality`` (the samples'
    registered modality; default image; clips: ``modality = "video"``).
    """

    urls: Any = attrs.field(default="")
    storage_options: Mapping[str, Any] = attrs.field(factory=dict)
    keys: tuple[str, ...] = attrs.field(default=IMAGE_KEYS, converter=tuple)
    caption_key: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    modality_choice: str = attrs.field(default="", alias="modality")

    @staticmethod
    def example_data(folder: str | os.PathLike) -> dict[str, Any]:
        """The ``data`` table of a small real source for contract tests: four bundled photos
        (96 px JPEGs) in two shards under ``folder``."""
        import webdataset as wds

        from atoken.data.indexed_source import example_images

        root = os.path.join(os.fspath(folder), "example_wds")
        if not os.path.isdir(root):
            os.makedirs(root)
            pattern = os.path.join(root, "shard-%06d.tar")
            with wds.ShardWriter(pattern, maxcount=2, verbose=0) as sink:
                for name, data in example_images():
                    sink.write({"__key__": name, "jpg": data, "txt": f"a photo of {name}"})
        urls = os.path.join(root, "shard-{000000..000001}.tar")
        return {"source": "webdataset", "urls": urls, "crop_min": 32, "crop_max": 64}

    def __attrs_post_init__(self) -> None:
        if self.modality_choice:
            self.modality = self.modality_choice
        if not self.keys:
            raise ConfigError("webdataset keys must name at least one extension")
        self.shards = expand_urls(self.urls) if self.urls else expand_urls([])
        self.samples: list[tuple[int, str, str, int, int]] = []  # shard, key, ext, offset, size
        self.captions_at: list[tuple[int, int] | None] = []
        names, problems = [], []
        for s, url in enumerate(self.shards):
            index = index_shard(url, self.storage_options)
            problems.extend(index.problems)
            for key, members in zip(index.keys, index.members, strict=True):
                ext = next((k for k in self.keys if k in members), None)
                if ext is None:
                    problems.append(
                        BadSampleError(
                            f"shard {url!r}, sample {key!r}: no member with a key in "
                            f"{list(self.keys)} (it has {sorted(members)})",
                            shard=url,
                            key=key,
                        )
                    )
                    continue
                self.samples.append((s, key, ext, *members[ext]))
                self.captions_at.append(members.get(self.caption_key.lower()))
                names.append(key if len(self.shards) == 1 else f"{os.path.basename(url)}/{key}")
        for exc in problems:  # counted before any step: the run fails now, or warns once each
            self.skip(exc)
        self._fs: tuple[int, dict[str, Any]] = (os.getpid(), {})
        self._split(names, str(self.urls))

    def _read_bytes(self, shard: int, offset: int, size: int) -> bytes:
        import fsspec

        pid, cache = self._fs
        if pid != os.getpid():  # a worker process: its own filesystem objects
            self._fs = pid, cache = os.getpid(), {}
        url = self.shards[shard]
        if url not in cache:
            cache[url] = fsspec.core.url_to_fs(url, **dict(self.storage_options))
        fs, path = cache[url]
        return fs.cat_file(path, start=offset, end=offset + size)

    def read(self, index: int) -> torch.Tensor:
        shard, key, ext, offset, size = self.samples[index]
        where = f"shard {self.shards[shard]!r}, sample {key!r}"
        try:
            data = self._read_bytes(shard, offset, size)
        except OSError as exc:
            raise BadSampleError(
                f"{where}: cannot read {ext!r}: {exc}", shard=self.shards[shard], key=key
            ) from exc
        if len(data) != size:
            raise BadSampleError(
                f"{where}: member {ext!r} is truncated ({len(data)} of {size} bytes)",
                shard=self.shards[shard],
                key=key,
            )
        try:
            return decode_sample(
                data, ext, resize=self.resize, where=where, frame_stride=self.decode_stride
            )
        except BadSampleError as exc:
            raise BadSampleError(str(exc), shard=self.shards[shard], key=key) from exc

    def caption(self, index: int) -> str:
        """The caption of sample ``index`` (``caption_key``; "" when it has none)."""
        at = self.captions_at[index]
        if at is None:
            return ""
        text = self._read_bytes(self.samples[index][0], *at).decode("utf-8", "replace")
        if self.caption_key.lower() == "json":
            import json

            value = json.loads(text)
            return (
                str(value.get("caption", value.get("text", "")))
                if isinstance(value, dict)
                else str(value)
            )
        return text.strip()
