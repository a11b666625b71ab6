"""``atoken encode`` and ``atoken reconstruct`` for any registered modality (--modality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.data import MediaWriter
from atoken.data.latent_store import LatentStore
from atoken.testing import registered_plugin


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tok") / "tok"
    params = {"depth": {"depth_mean": 3.0, "depth_std": 2.0}}
    tok = atoken.Tokenizer.from_preset(
        "tiny", depth=1, decoder_depth=1, modalities=["image", "depth"], modality_params=params
    )
    tok.save_pretrained(folder)
    return str(folder)


def test_reconstruct_a_depth_array_and_refuse_what_does_not_fit(tmp_path, checkpoint):
    depth = (1 + 4 * np.random.default_rng(0).random((40, 56))).astype(np.float32)
    np.save(tmp_path / "room.npy", depth)
    out = tmp_path / "out"
    args = ["reconstruct", "--checkpoint", checkpoint, "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--modality", "depth", str(tmp_path / "room.npy")])
    assert result.exit_code == 0, result.output
    assert "depth" in result.output and "RMSE" in result.output
    recon = np.load(out / "room_recon.npy")
    assert recon.shape == depth.shape and np.isfinite(recon).all()
    assert (out / "room_side_by_side.png").exists()
    # a .npy needs --modality; an image file is not a depth map; an unknown modality is named
    no_kind = CliRunner().invoke(main, [*args, str(tmp_path / "room.npy")])
    assert no_kind.exit_code == 1 and "--modality" in no_kind.output
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    wrong = CliRunner().invoke(main, [*args, "--modality", "depth", str(tmp_path / "x.png")])
    assert wrong.exit_code == 1 and "DataModalityError" in wrong.output
    picture = CliRunner().invoke(main, [*args, str(tmp_path / "x.png")])
    header = picture.output.splitlines()[0].split()
    assert picture.exit_code == 0 and header[-1] == "quality", picture.output  # not "error"
    assert "PSNR" in picture.output and "dB" in picture.output
    unknown = CliRunner().invoke(main, [*args, "--modality", "sonar", str(tmp_path / "room.npy")])
    assert unknown.exit_code == 1 and "no 'sonar' modality" in unknown.output
    # The saved tokenizer loads with its own list: a registered modality it was not built for
    # is named with how to add it (installing a plugin never changes a saved model).
    other = CliRunner().invoke(main, [*args, "--modality", "video", str(tmp_path / "room.npy")])
    assert other.exit_code == 1
    assert "no 'video' modality (it has ['image', 'depth'])" in other.output


def test_encode_a_float_store_as_its_modality(tmp_path, checkpoint):
    url = str(tmp_path / "depth.zarr")
    g = np.random.default_rng(1)
    with MediaWriter(url, modality="depth", sample_axes=("H", "W"), dtype="float32") as w:
        for i in range(3):
            w.add(f"d{i}", (1 + 4 * g.random((32, 48))).astype(np.float32))
    out = str(tmp_path / "latents.zarr")
    result = CliRunner().invoke(
        main, ["encode", "--checkpoint", checkpoint, url, out, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "encoded 3 samples (depth)" in result.output
    store = LatentStore(out)
    assert len(store) == 3 and [m["source"] for m in store.meta(range(3))] == ["d0", "d1", "d2"]
    wrong = CliRunner().invoke(
        main, ["encode", "--checkpoint", checkpoint, url, out, "--modality", "image"]
    )
    assert wrong.exit_code == 1 and "holds 'depth' samples" in wrong.output


class _StreamedScans:
    """A plugin modality that streams its ``.scan`` files (reads ``.npy`` as depth does)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    @atoken.hookimpl
    def register_modalities(self, register):
        from atoken_example_depth import DepthModality

        calls = self.calls

        class Scans(DepthModality):
            name = "scans"
            file_extensions = (".scan", ".npy")

            def streams(self, path):
                return str(path).endswith(".scan")

            def load(self, path):
                if str(path).endswith(".scan"):
                    raise AssertionError("a streamed file is never loaded whole")
                return super().load(path)

            def reconstruct_stream(self, tokenizer, path, out, *, max_frames=None):
                calls.append((type(tokenizer).__name__, max_frames))
                (out / "slices.txt").write_text(Path(path).read_text())
                return "3 slices", "RMSE 0.25"

        register("scans", Scans)


def test_a_modality_that_streams_its_files_writes_them_itself(tmp_path):
    plugin = _StreamedScans()
    (tmp_path / "body.scan").write_text("a b c")
    np.save(tmp_path / "room.npy", np.ones((32, 32), np.float32))
    out = tmp_path / "out"
    with registered_plugin(plugin, name="scans-plugin"):
        tok = atoken.create_tokenizer("tiny", depth=1, decoder_depth=1, modalities=["scans"])
        tok.save_pretrained(tmp_path / "tok")
        args = ["reconstruct", "--checkpoint", str(tmp_path / "tok"), "--out", str(out)]
        inputs = [str(tmp_path / "body.scan"), str(tmp_path / "room.npy")]
        result = CliRunner().invoke(main, [*args, "--max-frames", "7", *inputs])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:4]]
    assert rows[0] == ["body", "scans", "3", "slices", "RMSE", "0.25"]
    assert rows[1][:2] == ["room", "scans"] and (out / "room_recon.npy").exists()  # loaded whole
    assert plugin.calls == [("Tokenizer", 7)] and (out / "slices.txt").read_text() == "a b c"


class _ScanStores:
    """A plugin modality with a store format of its own: a folder holding ``scans.json``."""

    @atoken.hookimpl
    def register_modalities(self, register):
        from atoken_example_depth import DepthModality

        class ScanSamples(list):
            modality = "scans"

            def __init__(self, folder):
                files = sorted(Path(folder).glob("*.npy"))
                super().__init__(torch.from_numpy(np.load(f)) for f in files)
                self.names = tuple(f.stem for f in files)

        class Scans(DepthModality):
            name = "scans"

            @classmethod
            def open_store(cls, path):
                return ScanSamples(path) if (Path(path) / "scans.json").is_file() else None

        register("scans", Scans)


@pytest.mark.parametrize("count", [2, 0])
def test_a_store_of_a_modalitys_own_format_is_encoded_even_empty(tmp_path, count):
    store = tmp_path / "scans"
    store.mkdir()
    (store / "scans.json").write_text("{}")
    for i in range(count):
        np.save(store / f"s{i}.npy", (1 + np.arange(32 * 48, dtype=np.float32)).reshape(32, 48))
    with registered_plugin(_ScanStores(), name="scan-stores"):
        tok = atoken.create_tokenizer("tiny", depth=1, decoder_depth=1, modalities=["scans"])
        tok.save_pretrained(tmp_path / "tok")
        out = str(tmp_path / "latents.zarr")
        args = ["encode", "--checkpoint", str(tmp_path / "tok"), str(store), out, "--no-progress"]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output  # an empty one is its modality's, not zarr's
    assert f"encoded {count} samples (scans)" in result.output
    if count:
        assert [m["source"] for m in LatentStore(out).meta(range(count))] == ["s0", "s1"]
