"""Captions of the files of a folder, for a source that aligns them with text.

    folder_captions(root, names, caption_key="txt")              a sidecar per file:
                                                                 cats/1.png -> cats/1.txt
    folder_captions(root, names, caption_file="captions.csv")    one file for all of them

``names`` are the files' paths relative to ``root`` (``cats/1.png``), as
:class:`atoken.data.images.ImageFolder` lists them. A captions file is a ``.csv`` whose header
row names a ``file`` and a ``caption`` column, or a ``.json`` object ``{name: caption}``; a
relative ``caption_file`` is read from ``root``. Captions are stripped of surrounding white
space. Every file needs a non-empty caption: a folder where some have none is a
:class:`~atoken.core.errors.ConfigError` naming them (a silent hole would train on the rest
and score held-out samples against the wrong texts).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from atoken.core.errors import ConfigError

__all__ = ["CAPTION_KEYS", "folder_captions"]

#: The sidecar kinds ``caption_key`` accepts: ``"txt"``, a UTF-8 text file beside each file.
CAPTION_KEYS: tuple[str, ...] = ("txt",)


def folder_captions(
    root: str | Path, names: Sequence[str], *, caption_key: str = "", caption_file: str = ""
) -> tuple[str, ...] | None:
    """The caption of each of ``names`` (in order), or None when neither ``caption_key`` nor
    ``caption_file`` is given.

    Raises:
        ConfigError: both given, an unknown ``caption_key``, a captions file that is missing,
            unreadable or of another format, or files without a caption (the first named).
    """
    if caption_key and caption_file:
        raise ConfigError("give caption_key (sidecar files) or caption_file, not both")
    root = Path(root)
    if caption_key:
        if caption_key not in CAPTION_KEYS:
            raise ConfigError(f"caption_key must be one of {CAPTION_KEYS}, got {caption_key!r}")
        found = _sidecars(root, names, caption_key)
    elif caption_file:
        found = _read_file(root / caption_file)
    else:
        return None
    texts = [str(found.get(name, "")).strip() for name in names]
    missing = [name for name, text in zip(names, texts, strict=True) if not text]
    if missing:
        where = f"sidecar .{caption_key} files" if caption_key else repr(caption_file)
        raise ConfigError(
            f"{len(missing)} of the {len(names)} files under {str(root)!r} have no caption in "
            f"{where}: {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"
        )
    return tuple(texts)


def _sidecars(root: Path, names: Sequence[str], key: str) -> dict[str, str]:
    found = {}
    for name in names:
        sidecar = (root / name).with_suffix(f".{key}")
        if sidecar.is_file():
            found[name] = sidecar.read_text(encoding="utf-8")
    return found


def _read_file(path: Path) -> Mapping[str, str]:
    if not path.is_file():
        raise ConfigError(f"caption_file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            table = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(table, dict):
                raise ConfigError(f"{str(path)!r}: a .json captions file is an object name: text")
            return {str(k): str(v) for k, v in table.items()}
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                rows = csv.DictReader(f)
                if not {"file", "caption"} <= set(rows.fieldnames or ()):
                    raise ConfigError(
                        f"{str(path)!r}: the header row must name a 'file' and a 'caption' "
                        f"column, got {rows.fieldnames}"
                    )
                return {row["file"]: row["caption"] or "" for row in rows}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ConfigError(f"caption_file {str(path)!r} cannot be read: {exc}") from exc
    raise ConfigError(f"caption_file {str(path)!r}: a .csv or .json file, got {suffix!r}")
