"""The ``hf_datasets`` data source: a Hugging Face ``datasets`` dataset on local disk.

    data = { source = "hf_datasets", path = "data/photos_hf", image_key = "image" }

``path`` is a folder written by ``Dataset.save_to_disk`` (``split`` picks one split of a
``DatasetDict``), a parquet or arrow file, or a folder of them. Nothing is downloaded: the
dataset is opened from disk only (a ``datasets`` cache for parquet lives in ``cache_dir``,
default the library's). ``image_key`` is the column of the samples: an ``Image()`` column (its
encoded bytes are decoded here, as the ``webdataset`` source decodes, so ``resize`` is the
same), raw encoded bytes, or an array; ``caption_key`` a text column (optional); ``name_key``
a column naming the samples for ``heldout`` (default: the row number, ``"#12"``).

Samples are read by row in whatever process asks for them; the order is the shared
:class:`~atoken.data.epoch_order.EpochOrder` (see :mod:`atoken.data.indexed_source`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from atoken.core.errors import BadSampleError, ConfigError
from atoken.data.indexed_source import IndexedSource, decode_sample

__all__ = ["HFDatasetSource", "open_dataset"]

_str = attrs.validators.instance_of(str)


def open_dataset(path: str, *, split: str = "", cache_dir: str = "") -> Any:
    """The ``datasets.Dataset`` at ``path`` (``save_to_disk`` folder, parquet/arrow files).

    Raises:
        ConfigError: nothing readable there, or a ``DatasetDict`` without ``split`` named.
    """
    import datasets

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"hf_datasets path {path!r} does not exist")
    if p.is_dir() and ((p / "state.json").exists() or (p / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ConfigError(
                    f"hf_datasets {path!r} holds the splits {sorted(ds)}: name one with split = "
                )
            ds = ds[split]
        return ds
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    parquet = [str(f) for f in files if f.suffix == ".parquet"]
    arrow = [str(f) for f in files if f.suffix == ".arrow"]
    cache = {"cache_dir": cache_dir} if cache_dir else {}
    if parquet:
        return datasets.Dataset.from_parquet(parquet, **cache)
    if arrow:
        return datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in arrow])
    raise ConfigError(
        f"hf_datasets path {path!r} is neither a save_to_disk folder nor parquet/arrow files"
    )


@attrs.define(kw_only=True, slots=False)
class HFDatasetSource(IndexedSource):
    """``hf_datasets``: rows of a local Hugging Face dataset (see the module docstring)."""

    path: str = attrs.field(default="", validator=_str)
    split: str = attrs.field(default="", validator=_str)
    image_key: str = attrs.field(default="image", validator=_str)
    caption_key: str = attrs.field(default="", validator=_str)
    name_key: str = attrs.field(default="", validator=_str)
    cache_dir: str = attrs.field(default="", validator=_str)

    @staticmethod
    def example_data(folder: str | os.PathLike) -> dict[str, Any]:
        """The ``data`` table of a small real source for contract tests: four bundled photos
        (96 px JPEGs) in an ``Image()`` column, saved under ``folder`` with ``save_to_disk``."""
        import datasets

        from atoken.data.indexed_source import example_images

        path = os.path.join(os.fspath(folder), "example_hf")
        if not os.path.isdir(path):
            photos = example_images()
            rows = {
                "image": [{"bytes": data, "path": None} for _, data in photos],
                "name": [name for name, _ in photos],
            }
            features = datasets.Features(
                {"image": datasets.Image(), "name": datasets.Value("string")}
            )
            datasets.Dataset.from_dict(rows, features=features).save_to_disk(path)
        return {
            "source": "hf_datasets",
            "path": path,
            "name_key": "name",
            "crop_min": 32,
            "crop_max": 64,
        }

    def __attrs_post_init__(self) -> None:
        import datasets

        if not self.path:
            raise ConfigError("hf_datasets needs path = a save_to_disk folder or parquet files")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never download at run time
        ds = open_dataset(self.path, split=self.split, cache_dir=self.cache_dir)
        for key in (self.image_key, self.caption_key, self.name_key):
            if key and key not in ds.column_names:
                raise ConfigError(
                    f"hf_datasets {self.path!r} has no column {key!r}; its columns: "
                    f"{ds.column_names}"
                )
        if isinstance(ds.features[self.image_key], datasets.Image):
            ds = ds.cast_column(self.image_key, datasets.Image(decode=False))  # bytes, lazily
        self.dataset = ds
        if self.name_key:
            names = [str(n) for n in ds[self.name_key]]
        else:
            names = [f"#{i}" for i in range(len(ds))]
        self._split(names, self.path)

    def read(self, index: int) -> torch.Tensor:
        where = f"dataset {self.path!r}, row {index} ({self.names[index]!r})"
        value = self.dataset[index][self.image_key]
        if value is None:
            raise BadSampleError(f"{where}: {self.image_key!r} is empty", shard=self.path)
        if isinstance(value, dict):  # an Image() column: {"bytes": ..., "path": ...}
            data = value.get("bytes")
            if data is None and value.get("path"):
                data = Path(value["path"]).read_bytes()
            value = data
        if isinstance(value, (bytes, bytearray)):
            ext = "npy" if bytes(value[:6]) == b"\x93NUMPY" else "image"
            return decode_sample(
                bytes(value), ext, resize=self.resize, where=where, frame_stride=self.decode_stride
            )
        return torch.from_numpy(np.asarray(value).copy())  # an array column, as stored

    def caption(self, index: int) -> str:
        """The caption of row ``index`` (``caption_key``; "" without one)."""
        return str(self.dataset[index][self.caption_key]) if self.caption_key else ""
