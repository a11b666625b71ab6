"""WebDataset shards on the S3 loopback (moto's server through s3fs): the same samples as on
disk, and ``atoken train`` with data workers reading them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("webdataset")

from atoken.cli import main
from atoken.data.webdataset_source import WebDatasetSource
from tests.data.test_s3 import s3  # noqa: F401 (the moto server fixture)
from tests.data.test_webdataset import write_shards
from tests.test_train_streaming import RUN


@pytest.fixture(scope="module")
def s3_shards(s3, tmp_path_factory):  # noqa: F811
    """(local brace URL, S3 brace URL, storage_options) of the same three shards."""
    import s3fs

    options, bucket = s3
    local = write_shards(tmp_path_factory.mktemp("wds") / "shards")
    fs = s3fs.S3FileSystem(**options)
    for path in sorted(Path(local).parent.glob("train-*.tar")):
        fs.put_file(str(path), f"{bucket}/shards/{path.name}")
    return local, f"s3://{bucket}/shards/train-{{000000..000002}}.tar", options


def test_shards_on_s3_give_the_samples_on_disk(s3_shards):
    local, remote, options = s3_shards
    a = WebDatasetSource(urls=local, batch_size=3)
    b = WebDatasetSource(urls=remote, storage_options=options, batch_size=3)
    assert len(a.names) == len(b.names) == 12
    for step in range(3):
        for x, y in zip(a.batch(step, 0), b.batch(step, 0), strict=True):
            assert torch.equal(x, y)


def _s3_run_file(s3_shards, tmp_path: Path) -> Path:
    """A 2-step run with 2 data workers on the shards on S3."""
    _, remote, options = s3_shards
    table = ", ".join(f'{k} = "{v}"' for k, v in options.items())
    data = (
        f'{{ source = "webdataset", urls = "{remote}", storage_options = {{ {table} }}, '
        "batch_size = 2, crop_min = 32, crop_max = 48 }"
    )
    run = tmp_path / "s3.toml"
    run.write_text(RUN.format(out=tmp_path / "out", steps=2, workers=2, data=data))
    return run


def test_atoken_train_reads_shards_on_s3_with_workers(s3_shards, tmp_path):
    result = CliRunner().invoke(main, ["train", str(_s3_run_file(s3_shards, tmp_path))])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]


def test_atoken_train_nproc_2_reads_shards_on_s3_with_workers(s3_shards, tmp_path):
    """Each rank's data workers open the shards on S3 themselves (their own fsspec objects)."""
    import subprocess
    import sys

    run = _s3_run_file(s3_shards, tmp_path)
    cmd = [sys.executable, "-m", "atoken.cli", "train", "--nproc", "2", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
