"""Import raw images into a media store (:mod:`atoken.data.store`), resumably.

Sources are local folders, files, globs or fsspec URLs (``s3://bucket/photos/``,
``memory://in/*.png``). Each file becomes one sample, uint8 ``[H, W, 3]``, named by its path
relative to the folder (or the glob's fixed prefix) it was found under. A sample is stored
whole; its size is read from the file's header and checked against ``max_pixels`` (default
:data:`MAX_PIXELS`, Pillow's own bomb limit) before it is decoded, per call: Pillow's global
guard is never switched off.

Conversion (the same rules as the image modality): grayscale is repeated to RGB, 16-bit
images keep their high byte, alpha is premultiplied onto black.

Re-running an import into the same store skips every source whose name is already committed,
so an interrupted import resumes where its last commit left off.
"""

from __future__ import annotations

import io
import json
import posixpath
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import attrs
import fsspec
import numpy as np

from atoken.core.errors import ConfigError, ModalityInputError
from atoken.data.media_writer import MediaWriter, StoreLayout
from atoken.data.storage import StoreLike

__all__ = [
    "ImageSource",
    "ImportReport",
    "decode_image",
    "import_images",
    "list_image_sources",
    "load_mapping",
]

#: Default pixel limit of an imported image (``max_pixels``): Pillow's own hard limit, the
#: size past which it calls a file a decompression bomb (about 179 million pixels).
MAX_PIXELS = 2 * 89_478_485

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@attrs.frozen
class ImageSource:
    """One file to import: its sample name, its path on ``fs`` and the filesystem."""

    name: str
    path: str
    fs: Any = attrs.field(eq=False, repr=False)

    def read_bytes(self) -> bytes:
        """The file's bytes."""
        return self.fs.cat_file(self.path)


@attrs.frozen(kw_only=True)
class ImportReport:
    """What an import did: samples added, skipped as already stored, and bad sources
    (``(name, reason)``, only with ``skip_bad``), and the store's committed count."""

    added: int
    already_stored: int
    bad: tuple[tuple[str, str], ...]
    committed: int


def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def list_image_sources(
    sources: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[ImageSource]:
    """Every image file under ``sources`` (folders recursively, globs, files), sorted by name
    within each source.

    Raises:
        ConfigError: a source that matches nothing, or two files with the same name.
    """
    exts = tuple(e.lower() for e in extensions)
    out: list[ImageSource] = []
    seen: dict[str, str] = {}
    for src in sources:
        fs, path = fsspec.core.url_to_fs(src, **dict(storage_options or {}))
        path = path.rstrip("/") or "/"
        if _has_magic(path):
            parts = path.split("/")
            fixed = next(i for i, p in enumerate(parts) if _has_magic(p))
            root = "/".join(parts[:fixed])
            files = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            root, files = path, list(fs.find(path))
        elif fs.isfile(path):
            root, files = posixpath.dirname(path), [path]
        else:
            raise ConfigError(f"import source {src!r} does not exist")
        files = sorted(f for f in files if posixpath.splitext(f)[1].lower() in exts)
        if not files:
            raise ConfigError(f"import source {src!r} holds no image files ({', '.join(exts)})")
        for f in files:
            name = f[len(root) :].lstrip("/") if root and f.startswith(root) else f
            if name in seen:
                raise ConfigError(
                    f"two sources map to the sample name {name!r}: {seen[name]!r} and {f!r}; "
                    "import them into separate stores or rename one"
                )
            seen[name] = f
            out.append(ImageSource(name, f, fs))
    return out


def decode_image(data: bytes, *, name: str = "", max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes -> uint8 ``[H, W, 3]`` (see the module docstring for conversions).

    The size is read from the header and checked against ``max_pixels`` (default
    :data:`MAX_PIXELS`) before anything is decoded.

    Raises:
        ModalityInputError: the bytes are not a readable image, or it has more than
            ``max_pixels`` pixels (a decompression bomb, or an image too large to store).
    """
    from PIL import Image, UnidentifiedImageError

    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            opened = Image.open(io.BytesIO(data))
        with opened as image:
            width, height = image.size
            if width * height > limit:
                raise ModalityInputError(
                    f"{name or 'image'}: {width}x{height} = {width * height} pixels, above "
                    f"max_pixels={limit} "
                    "(a decompression-bomb guard: raise --max-pixels to store it)"
                )
            image.load()
            mode = image.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)  # [H, W, 4]
                return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
            if mode.startswith("I;16") or mode == "I":
                wide = np.asarray(image).astype(np.int64)  # [H, W]
                gray = np.clip(wide >> 8 if wide.max(initial=0) > 255 else wide, 0, 255)
                return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(image if mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    except ModalityInputError:
        raise
    except UnidentifiedImageError as exc:
        raise ModalityInputError(f"{name or 'image'}: not an image file PIL can read") from exc
    except Image.DecompressionBombError as exc:  # above Pillow's own hard limit
        raise ModalityInputError(f"{name or 'image'}: refused by Pillow: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ModalityInputError(
            f"{name or 'image'}: not a readable image ({type(exc).__name__}: {exc})"
        ) from exc


def _prefetch(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``(item, future)`` in order, with at most ``2 * workers`` decodes in flight."""
    with ThreadPoolExecutor(max(1, workers)) as ex:
        window: deque[tuple[Any, Future]] = deque()
        it = iter(items)
        for item in it:
            window.append((item, ex.submit(fn, item)))
            if len(window) >= 2 * max(1, workers):
                break
        while window:
            item, future = window.popleft()
            nxt = next(it, None)
            if nxt is not None:
                window.append((nxt, ex.submit(fn, nxt)))
            yield item, future


def _label_of(name: str, labels: str | Mapping[str, str] | None) -> str | None:
    if labels is None:
        return None
    if labels == "folder":
        folder = posixpath.dirname(name)
        return posixpath.basename(folder) or None
    if isinstance(labels, Mapping):
        value = labels.get(name)
        return None if value is None else str(value)
    raise ConfigError(f"labels must be 'folder' or a mapping of names to labels, got {labels!r}")


def _caption_of(src: ImageSource, captions: str | Mapping[str, str] | None) -> str:
    if captions is None:
        return ""
    if captions == "sidecar":
        text = posixpath.splitext(src.path)[0] + ".txt"
        return src.fs.cat_file(text).decode("utf-8").strip() if src.fs.isfile(text) else ""
    if isinstance(captions, Mapping):
        return str(captions.get(src.name, ""))
    raise ConfigError(f"captions must be 'sidecar' or a mapping, got {captions!r}")


def load_mapping(path: str) -> dict[str, str]:
    """A ``{name: value}`` JSON object from a file (for ``--captions`` and ``--labels``)."""
    with fsspec.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object mapping sample names to values")
    return {str(k): str(v) for k, v in data.items()}


def import_images(
    sources: Sequence[str],
    dst: StoreLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    src_storage_options: Mapping[str, Any] | None = None,
    layout: StoreLayout | None = None,
    flush_samples: int = 256,
    captions: str | Mapping[str, str] | None = None,
    labels: str | Mapping[str, str] | None = None,
    skip_bad: bool = False,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    lock_timeout: float = 0.0,
    max_pixels: int | None = None,
) -> ImportReport:
    """Import every image under ``sources`` into the media store ``dst`` (created or resumed).

    ``captions``: ``"sidecar"`` (``photo.txt`` beside ``photo.jpg``) or ``{name: caption}``;
    ``labels``: ``"folder"`` (the parent folder's name) or ``{name: label}``. With
    ``skip_bad``, unreadable files are reported in the result instead of raised.
    ``overwrite`` replaces a media store at ``dst`` once the import succeeds (never anything
    else, nor a path that is or contains a source); ``lock_timeout`` is how long to wait for
    another writer of ``dst``; an image of more than ``max_pixels`` pixels (default
    :data:`MAX_PIXELS`) is an unreadable one, found from its header before decoding.

    Raises:
        ConfigError: sources that match nothing or collide. ModalityInputError: an unreadable
        image (without ``skip_bad``). StoreError: ``dst`` holds anything but a media store,
        or is or contains a source. StoreLockedError: another writer holds ``dst``.
    """
    from tqdm.auto import tqdm

    found = list_image_sources(sources, src_storage_options)
    writer = MediaWriter(
        dst,
        storage_options,
        layout=layout,
        flush_samples=flush_samples,
        overwrite=overwrite,
        sources=sources,
        lock_timeout=lock_timeout,
    )
    todo = [s for s in found if s.name not in writer.names]
    bad: list[tuple[str, str]] = []
    added = 0

    def load(src: ImageSource) -> tuple[np.ndarray, str]:
        image = decode_image(src.read_bytes(), name=src.name, max_pixels=max_pixels)
        return image, _caption_of(src, captions)

    with writer, tqdm(total=len(todo), unit="img", disable=not progress) as bar:
        for src, future in _prefetch(load, todo, workers):
            try:
                image, caption = future.result()
            except (ModalityInputError, OSError) as exc:
                if not skip_bad:
                    raise
                bad.append((src.name, str(exc)))
            else:
                added += writer.add(
                    src.name, image, caption=caption, label=_label_of(src.name, labels)
                )
            bar.update(1)
            bar.set_postfix(committed=writer.committed, refresh=False)
    return ImportReport(
        added=added,
        already_stored=len(found) - len(todo),
        bad=tuple(bad),
        committed=writer.committed,
    )
