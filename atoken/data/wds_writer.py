"""Folder -> WebDataset shards: ``atoken data import images SRC... DST --format wds``.

Each image becomes one sample of a tar shard (``webdataset.ShardWriter``): its key is the
file's path under its source folder with the extension dropped (``cats/tabby.01.jpg`` ->
``cats/tabby_01``: WebDataset splits key and extension at the first dot of the file name), its
member the file's own bytes when it is a JPEG, PNG or WebP (nothing re-encoded) and a PNG
otherwise, and a ``txt`` member when a caption sits beside it (``tabby.01.txt``). A shard
closes at ``shard_samples`` samples or ``shard_bytes`` bytes, whichever comes first; shards are
``DST/<prefix>-000000.tar, ...`` and :attr:`WdsReport.urls` is their brace URL for the
``webdataset`` source.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Sequence
from pathlib import Path

import attrs

from atoken.core.errors import BadSampleError, ConfigError

__all__ = ["WdsReport", "list_images", "write_image_shards"]

_KEEP = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


@attrs.frozen(kw_only=True)
class WdsReport:
    """What an import into shards wrote: ``samples`` in ``shards`` files (``urls``: their brace
    notation), and the files it skipped (``skipped``: ``(path, reason)``)."""

    samples: int
    shards: tuple[str, ...]
    urls: str
    skipped: tuple[tuple[str, str], ...] = ()


def list_images(srcs: Sequence[str]) -> list[tuple[Path, str]]:
    """``(file, key)`` of every image under ``srcs`` (folders recursively, globs, files),
    sorted per source; keys are unique.

    Raises:
        ConfigError: a source that matches nothing, or two files of one key.
    """
    from atoken.data.images import IMAGE_EXTENSIONS

    out: list[tuple[Path, str]] = []
    for src in srcs:
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            out += [(p, _key(p.relative_to(path))) for p in files]
        else:
            matches = sorted(Path(m) for m in glob.glob(src)) or ([path] if path.exists() else [])
            if not matches:
                raise ConfigError(f"import source {src!r} matches no file")
            out += [(p, _key(Path(p.name))) for p in matches]
    keys = [k for _, k in out]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"two files would share the sample key(s) {twice[:5]}: rename one")
    return out


def _key(relative: Path) -> str:
    stem = relative.name.split(".")[0] if relative.name.startswith(".") else relative.stem
    return str(relative.parent / stem.replace(".", "_")).removeprefix("./")


def _member(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    ext = _KEEP.get(path.suffix.lower())
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # a header and structure check, no full decode
        if ext is not None:
            return ext, data
        with Image.open(io.BytesIO(data)) as img:
            buf = io.BytesIO()
            img.save(buf, "PNG")
        return "png", buf.getvalue()
    except Exception as exc:
        message = f"{str(path)!r} is not a readable image: {exc}"
        raise BadSampleError(message, shard=str(path)) from exc


def write_image_shards(
    srcs: Sequence[str],
    dst: str | os.PathLike,
    *,
    prefix: str = "shard",
    shard_samples: int = 1000,
    shard_bytes: int = 1 << 30,
    skip_bad: bool = False,
    progress: bool = False,
) -> WdsReport:
    """Write every image under ``srcs`` into tar shards in the folder ``dst`` (module docs).

    Raises:
        ConfigError: bad sizes, no image, or ``dst`` already holding shards of ``prefix``.
        BadSampleError: an unreadable image (``skip_bad``: reported and left out instead).
    """
    import webdataset as wds
    from tqdm import tqdm

    if shard_samples < 1 or shard_bytes < 1:
        raise ConfigError(f"need shard sizes >= 1, got {shard_samples} samples, {shard_bytes} B")
    files = list_images(srcs)
    if not files:
        raise ConfigError(f"no image files under {list(srcs)}")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    if list(out.glob(f"{prefix}-*.tar")):
        raise ConfigError(f"{str(out)!r} already holds {prefix}-*.tar shards: pick another folder")
    skipped: list[tuple[str, str]] = []
    samples = 0
    pattern = str(out / f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=shard_samples, maxsize=shard_bytes, verbose=0) as sink:
        for path, key in tqdm(files, disable=not progress, desc="shards", unit="img"):
            try:
                ext, data = _member(path)
            except BadSampleError as exc:
                if not skip_bad:
                    raise
                skipped.append((str(path), str(exc)))
                continue
            sample = {"__key__": key, ext: data}
            caption = path.with_suffix(".txt")
            if caption.exists():
                sample["txt"] = caption.read_text("utf-8").strip()
            sink.write(sample)
            samples += 1
    shards = tuple(sorted(str(p) for p in out.glob(f"{prefix}-*.tar")))
    if not samples:
        for shard in shards:  # the writer opened one before the first sample
            os.remove(shard)
        raise ConfigError(f"no readable image under {list(srcs)} ({len(skipped)} skipped)")
    last = len(shards) - 1
    urls = str(out / f"{prefix}-{{000000..{last:06d}}}.tar") if last else shards[0]
    return WdsReport(samples=samples, shards=shards, urls=urls, skipped=tuple(skipped))
