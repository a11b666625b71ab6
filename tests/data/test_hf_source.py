"""The ``hf_datasets`` data source on small datasets built on disk (nothing downloads)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from atoken.core.errors import ConfigError
from atoken.data import SourceContext, build_source
from atoken.data.hf_source import HFDatasetSource

datasets = pytest.importorskip("datasets")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # nothing may download


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (36 + i, 40, 3), dtype=np.uint8)) for i in range(n)
    ]


@pytest.fixture
def saved(tmp_path) -> str:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "id": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": _images(8),
            "caption": [f"c{i}" for i in range(8)],
            "id": [f"p{i}" for i in range(8)],
        },
        features=features,
    )
    path = tmp_path / "saved"
    ds.save_to_disk(str(path))
    return str(path)


def test_a_saved_dataset_trains_through_the_registry(saved):
    table = {
        "source": "hf_datasets",
        "path": saved,
        "image_key": "image",
        "batch_size": 3,
        "crop_min": 16,
        "crop_max": 32,
        "name_key": "id",
        "caption_key": "caption",
    }
    source = build_source(table, SourceContext(seed=2), where="t")
    assert source.modality == "image" and source.heldout_names == ("p7",)
    assert source.heldout[0].shape == (3, 43, 40)
    batch = source.batch(0, 0)
    assert len(batch) == 3 and all(x.shape[0] == 3 and max(x.shape[1:]) <= 32 for x in batch)
    again = build_source(table, SourceContext(seed=2), where="t").batch(0, 0)
    assert all(torch.equal(x, y) for x, y in zip(batch, again, strict=True))
    assert source.caption(1) == "c1"


def test_parquet_files_and_a_decoded_pixel_match(tmp_path, saved):
    ds = datasets.load_from_disk(saved)
    ds.to_parquet(str(tmp_path / "part-0.parquet"))
    source = HFDatasetSource(path=str(tmp_path / "part-0.parquet"), cache_dir=str(tmp_path / "c"))
    assert len(source.names) == 8 and source.names[0] == "#0"
    expected = torch.from_numpy(np.array(_images(8)[0])).permute(2, 0, 1)
    assert torch.equal(source.read(0), expected)  # PNG round trip: lossless


def test_an_array_column_and_a_dataset_dict(tmp_path):
    arrays = [np.full((3, 20, 24), i, dtype=np.uint8) for i in range(4)]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"pixels": arrays})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match="split"):
        HFDatasetSource(path=str(tmp_path / "dd"), image_key="pixels")
    source = HFDatasetSource(path=str(tmp_path / "dd"), split="train", image_key="pixels")
    assert source.read(2).shape == (3, 20, 24) and int(source.read(2)[0, 0, 0]) == 2


def test_a_missing_column_or_path_is_named(tmp_path, saved):
    with pytest.raises(ConfigError, match=r"'img'.*columns"):
        HFDatasetSource(path=saved, image_key="img")
    with pytest.raises(ConfigError, match="does not exist"):
        HFDatasetSource(path=str(tmp_path / "none"))
