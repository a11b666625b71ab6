"""Guards before the expensive work: sizes come from headers and shapes, then ``max_tokens``
(or ``max_pixels``) is checked, then the sample is decoded; a tampered ``config.json`` is
checked against the weight file before the model is allocated."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageFile

import atoken.data.pixels as image_mod
import atoken.modalities.video as video_mod
from atoken import Tokenizer, TooManyTokensError
from atoken.cli import main
from atoken.data import MediaStore
from atoken.data.video_io import write_video
from atoken.engine.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.from_preset("tiny", depth=1, decoder_depth=1).eval()


def _no_decode(monkeypatch) -> None:
    def refuse(self, *a, **k):
        raise AssertionError("decoded before the token guard")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def _bomb_png(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` pixels, with almost no data (as a
    decompression bomb's header does)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def test_a_large_png_is_refused_from_its_header(tmp_path, tiny, monkeypatch):
    path = tmp_path / "huge.png"
    _bomb_png(path, 12000, 12000)  # 562,500 tokens at patch 16
    _no_decode(monkeypatch)
    with pytest.raises(TooManyTokensError, match="12000x12000 gives 562500 tokens"):
        tiny.encode([str(path)])
    tiny.save_pretrained(tmp_path / "tok")
    result = CliRunner().invoke(
        main,
        ["reconstruct", "--checkpoint", str(tmp_path / "tok"), str(path), "--out", str(tmp_path)],
    )
    assert result.exit_code != 0 and "TooManyTokensError" in result.output


def test_a_huge_array_view_is_refused_before_it_is_converted(tiny, monkeypatch):
    view = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # no memory
    monkeypatch.setattr(image_mod, "_from_numpy", lambda a: pytest.fail("converted first"))
    with pytest.raises(TooManyTokensError, match="20000x20000"):
        tiny.encode([view])
    big = torch.zeros(3, 1, 1).expand(3, 20000, 20000)
    with pytest.raises(TooManyTokensError):
        tiny.encode([big])


def test_a_long_video_decodes_no_more_frames_than_the_guard_allows(tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    write_video(torch.rand(3, 60, 32, 32), path, fps=30)
    model = Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, modality_params={"video": {"max_tokens": 16}}
    ).eval()  # 4 tokens per 4 frames: 16 frames fit
    decoded = []
    real = video_mod.read_video

    def counting(*args, **kwargs):
        clip = real(*args, **kwargs)
        decoded.append(clip.shape[1])
        return clip

    monkeypatch.setattr(video_mod, "read_video", counting)
    monkeypatch.setattr(video_mod, "video_info", lambda p: {**real_info(p), "frames": 0})
    with pytest.raises(TooManyTokensError, match="more than 16 frames"):
        model.encode([str(path)], modality="video")
    assert decoded == [17]  # not 60: decoding stopped one frame past the budget
    monkeypatch.undo()
    with pytest.raises(TooManyTokensError, match="60x32x32 gives 60 tokens"):  # the header
        model.encode([str(path)], modality="video")
    # untiled, a tensor's shape is checked before any conversion
    monkeypatch.setattr(video_mod, "to_video_tensor", lambda *a, **k: pytest.fail("converted"))
    clip = torch.zeros(3, 1, 1, 1).expand(3, 1500, 512, 512)  # a view: no memory
    with pytest.raises(TooManyTokensError, match="1500x512x512"):
        model.encode([clip], modality="video", tile_steps=0)


real_info = video_mod.video_info


def test_an_import_skips_a_decompression_bomb_without_lifting_pillows_guard(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "ok.png")
    _bomb_png(src / "bomb.png", 40000, 40000)  # above Pillow's own hard limit
    _bomb_png(src / "big.png", 300, 300)  # above --max-pixels below
    limit = Image.MAX_IMAGE_PIXELS
    args = ["data", "import", "images", str(src), str(tmp_path / "s.zarr"), "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--skip-bad", "--max-pixels", "10000"])
    assert result.exit_code == 0, result.output
    assert "skipped bomb.png" in result.output and "skipped big.png" in result.output
    assert "above max_pixels=10000" in result.output
    assert MediaStore(tmp_path / "s.zarr").names == ("ok.png",)
    assert limit == Image.MAX_IMAGE_PIXELS  # the process-wide guard was never touched
    strict = CliRunner().invoke(main, [*args, "--max-pixels", "10000"])
    assert strict.exit_code == 1 and "ModalityInputError" in strict.output


def _tamper(folder, edit) -> None:
    doc = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(edit(doc)))


def test_a_tampered_config_is_checked_against_the_weight_shapes_first(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "tok")

    def huge(doc):
        doc["config"]["encoder"]["backbone"].update(depth=64, width=2048, heads=16, mlp_hidden=8192)
        return doc

    _tamper(tmp_path / "tok", huge)
    with pytest.raises(
        CheckpointError, match=r"does not describe the weights.*3,\d{3},\d{3},\d{3} parameters"
    ):
        Tokenizer.from_pretrained(tmp_path / "tok")
    _tamper(tmp_path / "tok", lambda doc: [doc])
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        Tokenizer.from_pretrained(tmp_path / "tok")
