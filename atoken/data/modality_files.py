"""The samples of one modality from a folder of its files or from a media store: what
``atoken eval --modality`` (and ``atoken encode --modality``) read.

    samples = ModalityFiles(folder, model.modality("pointcloud"))   files read on access
    samples, names = modality_files(model, "pointcloud", "clouds/")  a folder or a store

A folder gives every file under it (recursively, sorted) that the modality ``reads`` (its
suffix is in ``file_extensions``, or a folder the modality recognises as one sample, e.g. a 3D
asset's views in the official layout: nothing inside it is a sample of its own), each read with
its ``load`` (a ``.npy`` array by default); the folder itself when the modality reads it as one
sample; a media store
(a ``.zarr`` path or an fsspec URL, :func:`atoken.data.zarr_dataset.is_store_url`) gives its
samples, and must hold that modality.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atoken.core.errors import ConfigError, DataModalityError

__all__ = ["ModalityFiles", "modality_files"]


class ModalityFiles(Sequence):
    """Every file (or sample folder) under ``root`` that ``modality`` reads (``reads``), sorted;
    ``self[i]`` is ``modality.load`` of file ``i`` and ``names`` their paths under ``root``
    (``root`` itself, named by its own name, when the modality reads it as one sample).

    Raises:
        ConfigError: ``root`` is not a folder, or holds none of those files.
    """

    def __init__(self, root: str | Path, modality: Any) -> None:
        self.root, self.modality = Path(root), modality
        if not self.root.is_dir():
            raise ConfigError(f"{str(self.root)!r} is not a folder of {modality.name} files")
        if modality.reads(self.root):  # the folder is one sample
            self.files, self.names = [self.root], (self.root.name,)
            return
        found: list[Path] = []
        for top, dirs, files in os.walk(self.root, followlinks=True):
            here = Path(top)
            samples = [d for d in dirs if modality.reads(here / d)]  # folders that are samples
            dirs[:] = [d for d in dirs if d not in samples]  # what they hold is not walked
            found += [here / d for d in samples]
            found += [here / f for f in files if modality.reads(here / f)]
        self.files = sorted(found)
        if not self.files:
            extensions = ", ".join(modality.file_extensions)
            raise ConfigError(f"no {modality.name} files ({extensions}) under {str(self.root)!r}")
        self.names = tuple(str(p.relative_to(self.root)) for p in self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        return self.modality.load(self.files[index])


def modality_files(model: Any, modality: str, data: str) -> tuple[list[Any], tuple[str, ...]]:
    """``(samples, names)`` of ``modality`` in ``data``: a folder of its files or a media
    store of it (see the module docstring).

    Raises:
        UnknownModalityError: ``model`` has no such modality.
        DataModalityError: the store holds another modality.
        ConfigError: a folder without its files.
    """
    from atoken.data.zarr_dataset import ZarrSamples, is_store_url

    reader = model.modality(modality)
    if is_store_url(data):
        store = ZarrSamples(data)
        if store.modality != modality:
            raise DataModalityError(f"{data!r} holds {store.modality!r} samples, not {modality!r}")
        return [store[i] for i in range(len(store))], store.names
    files = ModalityFiles(data, reader)
    return [files[i] for i in range(len(files))], files.names
