"""The ``webdataset`` data source: brace URLs, indexed reading, the epoch order, bad samples."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("webdataset")
import webdataset as wds

from atoken.core.errors import BadSampleError, ConfigError
from atoken.data import SourceContext, build_source
from atoken.data.webdataset_source import WebDatasetSource, expand_urls, index_shard


def _jpeg(rng: np.random.Generator, h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def write_shards(root: Path, n: int = 12, per_shard: int = 5, seed: int = 0) -> str:
    """``n`` JPEG samples (with captions) in shards of ``per_shard``; returns the brace URL."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(root / "train-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(n):
            sink.write({"__key__": f"s{i:05d}", "jpg": _jpeg(rng, 40 + i, 48), "txt": f"c{i}"})
    last = (n - 1) // per_shard
    return str(root / f"train-{{000000..{last:06d}}}.tar")


@pytest.fixture
def shards(tmp_path) -> str:
    return write_shards(tmp_path / "shards")


def test_brace_urls_expand_and_a_list_is_joined():
    assert expand_urls("a-{00..02}.tar") == ["a-00.tar", "a-01.tar", "a-02.tar"]
    assert expand_urls(["x.tar", "b-{1..2}.tar"]) == ["x.tar", "b-1.tar", "b-2.tar"]
    with pytest.raises(ConfigError, match="urls"):
        expand_urls([])


def test_built_through_the_registry_with_shapes_and_captions(shards):
    table = {
        "source": "webdataset",
        "urls": shards,
        "batch_size": 3,
        "crop_min": 16,
        "crop_max": 32,
    }
    source = build_source(table, SourceContext(), where="t")
    assert source.modality == "image" and len(source.names) == 12
    assert source.heldout_names == ("train-000002.tar/s00011",)  # the last sample
    assert source.heldout[0].shape == (3, 51, 48) and source.heldout[0].dtype == torch.float32
    batch = source.batch(0, 0)
    assert len(batch) == 3
    for x in batch:
        assert x.shape[0] == 3 and max(x.shape[1:]) <= 32 and 0 <= x.min() <= x.max() <= 1
    caption = WebDatasetSource(urls=shards, caption_key="txt")
    assert [caption.caption(i) for i in range(3)] == ["c0", "c1", "c2"]


def test_an_unknown_parameter_is_named(shards):
    with pytest.raises(ConfigError, match="shard_size"):
        build_source(
            {"source": "webdataset", "urls": shards, "shard_size": 3}, SourceContext(), where="t"
        )


def test_a_missing_shard_or_a_gzipped_one_is_named(tmp_path, shards):
    with pytest.raises(ConfigError, match=r"nope\.tar"):
        WebDatasetSource(urls=str(tmp_path / "nope.tar"))
    gz = tmp_path / "x.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        tar.add(shards.replace("{000000..000002}", "000000"), arcname="a.tar")
    with pytest.raises(ConfigError, match="uncompressed"):
        WebDatasetSource(urls=str(gz))


def test_resize_scales_the_shorter_side(shards):
    source = WebDatasetSource(urls=shards, resize=24, crop_min=8, crop_max=512, batch_size=2)
    assert min(source.heldout[0].shape[1:]) == 24
    assert all(min(x.shape[1:]) <= 24 for x in source.batch(3, 0))


def test_batches_depend_on_seed_step_micro_and_rank_only(shards):
    a = WebDatasetSource(urls=shards, batch_size=3, context=SourceContext(seed=4))
    b = WebDatasetSource(urls=shards, batch_size=3, context=SourceContext(seed=4))
    for step, micro in [(5, 0), (0, 0), (5, 0), (2, 1)]:
        for x, y in zip(a.batch(step, micro), b.batch(step, micro), strict=True):
            assert torch.equal(x, y)
    other = WebDatasetSource(urls=shards, batch_size=3, context=SourceContext(seed=5))
    assert other.sample_indices(0, 0) != a.sample_indices(0, 0)


@pytest.mark.parametrize(("world", "micro_steps"), [(1, 1), (2, 1), (3, 2)])
def test_an_epoch_over_all_ranks_has_every_sample_once(shards, world, micro_steps):
    sources = [
        WebDatasetSource(
            urls=shards,
            batch_size=2,
            heldout="train-000000.tar/s00000",
            context=SourceContext(rank=r, world_size=world, micro_steps=micro_steps),
        )
        for r in range(world)
    ]
    n = len(sources[0].train)  # 11 training samples
    drawn = [
        i
        for step in range(6)
        for micro in range(micro_steps)
        for r in range(world)
        for i in sources[r].sample_indices(step, micro)
    ]
    for epoch in range(len(drawn) // n):
        assert sorted(drawn[epoch * n : (epoch + 1) * n]) == sorted(sources[0].train)
    assert 0 not in drawn  # the held-out sample is never trained on


def test_index_lists_members_with_offsets(shards):
    index = index_shard(shards.replace("{000000..000002}", "000000"))
    assert index.keys == ("s00000", "s00001", "s00002", "s00003", "s00004")
    assert set(index.members[0]) == {"jpg", "txt"} and not index.problems


# ------------------------------------------------------------------------------ bad data
def _damaged(tmp_path: Path) -> tuple[str, str]:
    """A shard whose sample s00002 is a corrupt JPEG and s00003 lacks an image, and a shard
    cut inside its last member; returns (good-ish shard, truncated shard)."""
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad-000000.tar"
    with wds.TarWriter(str(bad)) as sink:
        for i in range(6):
            sample = {"__key__": f"s{i:05d}", "jpg": _jpeg(rng, 40, 40)}
            if i == 2:
                sample["jpg"] = b"\xff\xd8\xff\xe0 not a jpeg at all" * 3
            if i == 3:
                sample = {"__key__": "s00003", "txt": "no image"}
            sink.write(sample)
    cut = tmp_path / "bad-000001.tar"
    with wds.TarWriter(str(cut)) as sink:
        for i in range(3):
            sink.write({"__key__": f"t{i:05d}", "jpg": _jpeg(rng, 64, 64)})
    data = cut.read_bytes()
    with tarfile.open(cut) as tar:
        last = tar.getmembers()[-1]
    cut.write_bytes(data[: last.offset_data + last.size // 2])
    return str(bad), str(cut)


def test_bad_samples_are_skipped_counted_and_never_repeated(tmp_path, caplog):
    bad, cut = _damaged(tmp_path)
    source = WebDatasetSource(
        urls=[bad, cut],
        batch_size=3,
        heldout="bad-000000.tar/s00000",
        shuffle=False,
        context=SourceContext(max_bad_samples=3),
    )
    assert source.bad == 2  # the image-less sample and the truncated member, found up front
    assert "bad-000000.tar/s00003" not in source.names
    assert "bad-000001.tar/t00002" not in source.names
    assert "t00002" in caplog.text and "truncated" in caplog.text
    # in order: s00001 s00002 s00004 | s00005 t00000 t00001; s00002 does not decode
    first = source.batch(0, 0)
    assert len(first) == 2 and source.bad == 3
    assert "bad-000000.tar" in caplog.text and "s00002" in caplog.text
    assert len(source.batch(1, 0)) == 3


def test_more_bad_samples_than_allowed_fail_naming_shard_and_key(tmp_path):
    bad, cut = _damaged(tmp_path)
    with pytest.raises(BadSampleError, match="t00002") as info:
        WebDatasetSource(urls=[bad, cut], context=SourceContext(max_bad_samples=1))
    assert info.value.shard == cut and info.value.key == "t00002"
    source = WebDatasetSource(
        urls=[bad, cut], shuffle=False, batch_size=3, context=SourceContext(max_bad_samples=2)
    )
    with pytest.raises(BadSampleError, match="s00002") as info:
        source.batch(0, 0)
    assert info.value.shard == bad and "max_bad_samples = 2" in str(info.value)
