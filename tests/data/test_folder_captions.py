"""Captions for an image folder (#35 item 7): sidecar ``.txt`` files or one captions file make
``image_folder`` a captioned source that ``text_alignment`` trains from a run file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from atoken.cli import main
from atoken.core.errors import ConfigError
from atoken.data.captions import folder_captions
from atoken.data.sources import CaptionedSource, SourceContext
from atoken.plugins.manager import get_registry

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}

RUN = """
[run]
out_dir = "{out}"

[model]
preset = "tiny"
modalities = ["image"]
latent_dim = 8
text_encoder = "minilm"
overrides = {{ depth = 1, decoder_depth = 1 }}

[train]
steps = 2
precision = "fp32"
ema_decay = 0.0
log_every = 1

[[tasks]]
name = "text_alignment"
metrics = ["psnr", "zeroshot", "retrieval"]
previews = 0
[tasks.data]
source = "image_folder"
path = "{images}"
batch_size = 4
crop_min = 32
crop_max = 32
heldout = {heldout}
caption_key = "txt"
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Six 40 px images of three colours in two subfolders, each with a sidecar caption."""
    root = tmp_path_factory.mktemp("captioned")
    rng = np.random.default_rng(0)
    for k, (name, rgb) in enumerate(COLOURS.items()):
        for j in range(2):
            sub = root / f"set{j}"
            sub.mkdir(exist_ok=True)
            noise = rng.integers(-20, 20, (40, 40, 3))
            pixels = np.clip(np.array(rgb)[None, None] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(sub / f"{k}{name}.png")
            (sub / f"{k}{name}.txt").write_text(f"  a {name} square\n")
    return root


def _source(**data):
    factory = get_registry().data_sources.get("image_folder")
    return factory(context=SourceContext(), batch_size=4, crop_min=16, crop_max=16, **data)


def test_sidecar_captions_follow_each_crop_to_its_own_image(folder):
    source = _source(path=str(folder), caption_key="txt")
    assert isinstance(source, CaptionedSource)
    assert source.captions == ("a blue square",)  # the held-out image: the last file
    assert source.heldout_names == ("set1/2blue.png",)
    crops, labels, texts = source.labelled_batch(3, 0)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    for crop, label, text in zip(crops, labels.tolist(), texts, strict=True):
        colour = next(c for c in COLOURS if c in names[label])
        assert text == f"a {colour} square"  # the caption of the image the crop came from
        channel = list(COLOURS).index(colour)
        assert int(crop.mean((1, 2)).argmax()) == channel  # and the crop is of that colour
    assert [c.shape for c in crops] == [c.shape for c in source.batch(3, 0)]  # same crops
    again = source.labelled_batch(3, 0)
    assert again[2] == texts and all((a == b).all() for a, b in zip(again[0], crops, strict=True))


def test_a_captions_file_csv_or_json_gives_the_same_captions(folder, tmp_path):
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    sidecar = folder_captions(folder, names, caption_key="txt")
    (folder / "captions.csv").write_text(
        "file,caption\n" + "".join(f"{n},{t}\n" for n, t in zip(names, sidecar, strict=True))
    )
    (folder / "captions.json").write_text(json.dumps(dict(zip(names, sidecar, strict=True))))
    for file in ("captions.csv", "captions.json"):
        assert folder_captions(folder, names, caption_file=file) == sidecar
        assert _source(path=str(folder), caption_file=file).captions == ("a blue square",)


def test_missing_or_ambiguous_captions_are_config_errors_naming_them(folder, tmp_path):
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
    short = {n: "a square" for n in names[1:]}
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(ConfigError, match=rf"1 of the 6 files .* {names[0]}"):
        folder_captions(folder, names, caption_file=str(tmp_path / "short.json"))
    with pytest.raises(ConfigError, match="not both"):
        folder_captions(folder, names, caption_key="txt", caption_file="captions.csv")
    with pytest.raises(ConfigError, match="caption_key must be one of"):
        _source(path=str(folder), caption_key="json")
    with pytest.raises(ConfigError, match="does not exist"):
        folder_captions(folder, names, caption_file="nope.csv")
    (tmp_path / "bad.csv").write_text("name,text\na,b\n")
    with pytest.raises(ConfigError, match="'file' and a 'caption' column"):
        folder_captions(folder, names, caption_file=str(tmp_path / "bad.csv"))
    uncaptioned = _source(path=str(folder))
    assert not isinstance(uncaptioned, CaptionedSource)
    with pytest.raises(ConfigError, match="caption_key = 'txt'"):
        uncaptioned.labelled_batch(0, 0)


def test_atoken_train_aligns_an_image_folder_with_its_captions(folder, tmp_path):
    held = json.dumps([f"set1/{k}{name}.png" for k, name in enumerate(COLOURS)])
    run = tmp_path / "run.toml"
    run.write_text(
        RUN.format(
            out=tmp_path / "out", images=folder, heldout=held, captions='caption_key = "txt"'
        )
    )
    result = CliRunner().invoke(main, ["train", str(run)])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert all("text_alignment/siglip" in r for r in train)  # the captions were embedded
    final = [r for r in records if r["kind"] == "eval"][-1]
    assert 0.0 <= final["text_alignment/zeroshot_top1"] <= 1.0  # three held-out captions
    assert "text_alignment/i2t_r1" in final
