"""Text alignment on captioned WebDataset shards (each sample its own caption, as web data
is): the batch carries its texts, read in the data workers; held-out samples are scored
against the held-out captions; through ``atoken train`` with data workers."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from atoken.cli import main
from atoken.data import CaptionedSource, SourceContext, build_source
from atoken.tasks.alignment import TextAlignmentTask
from tests.data.test_webdataset import write_shards

pytest.importorskip("webdataset")


def test_a_caption_key_makes_a_source_captioned_with_texts_in_its_batches(tmp_path):
    urls = write_shards(tmp_path / "shards", n=10, per_shard=5)  # captions "c0" .. "c9"
    table = {"source": "webdataset", "urls": urls, "batch_size": 3, "crop_min": 16,
             "crop_max": 16, "heldout": ["train-000001.tar/s00009"]}  # fmt: skip
    plain = build_source(table, SourceContext(), where="test")
    assert not isinstance(plain, CaptionedSource)  # no caption_key: not for text alignment
    captioned = build_source({**table, "caption_key": "txt"}, SourceContext(), where="test")
    assert isinstance(captioned, CaptionedSource)
    assert captioned.captions == ("c9",) and captioned.heldout_labels.tolist() == [0]
    samples, labels, texts = captioned.labelled_batch(0, 0)
    assert len(samples) == len(texts) == 3
    assert texts == [f"c{int(captioned.names[i][-1])}" for i in labels.tolist()]  # its own
    same = plain.batch(0, 0)
    assert all(torch.equal(a, b) for a, b in zip(samples, same, strict=True))


def test_positives_mark_each_samples_own_caption_and_equal_texts_are_one():
    batch = ([torch.zeros(1)] * 3, torch.tensor([4, 7, 9]), ["a dog", "a cat", "a dog"])
    texts, positives = TextAlignmentTask.batch_texts(object.__new__(TextAlignmentTask), batch)
    assert texts == ["a dog", "a cat"]
    assert positives.tolist() == [[True, False], [False, True], [True, False]]


def test_text_alignment_trains_on_captioned_shards_with_workers(tmp_path):
    urls = write_shards(tmp_path / "shards", n=12, per_shard=4)
    run = tmp_path / "run.toml"
    run.write_text(
        f"""
[run]
out_dir = "{tmp_path / "out"}"
[model]
preset = "tiny"
overrides = {{ depth = 1, decoder_depth = 1 }}
text_encoder = "minilm"
[train]
steps = 2
precision = "fp32"
log_every = 1
progress = false
data_workers = 2
[[tasks]]
name = "text_alignment"
metrics = ["psnr", "zeroshot", "retrieval"]
previews = 0
data = {{ source = "webdataset", urls = "{urls}", caption_key = "txt", batch_size = 3, crop_min = 32, crop_max = 32, heldout = ["train-000002.tar/s00010", "train-000002.tar/s00011"] }}
"""  # noqa: E501
    )
    result = CliRunner().invoke(main, ["train", str(run)])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all("text_alignment/siglip" in r for r in train)
    final = [r for r in records if r["kind"] == "eval"][-1]
    assert "text_alignment/zeroshot_top1" in final and "text_alignment/i2t_r1" in final
