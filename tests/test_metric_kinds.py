"""Metrics declare what they score (#33 item 4): a metric given samples it does not score is a
``ConfigError`` when the run is built, naming the task, the metric and the modality, and
``atoken eval --modality`` picks the metrics registered for the modality's samples.

Shapes: a 12-band image ``[12, H, W]`` in 16 x 16 patches is 3072 values a token, as many as
an RGB tubelet; its ``sample_kind`` is ``"array"``, not ``"picture"``.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
from click.testing import CliRunner

import atoken
from atoken.cli import main
from atoken.data.sources import SourceContext
from atoken.testing import registered_plugin

RUN = """
[run]
out_dir = "{out}"

[model]
preset = "tiny"
modalities = ["bands"]
latent_dim = 8
overrides = {{ depth = 1, decoder_depth = 1 }}

[train]
steps = 1
precision = "fp32"

[[tasks]]
name = "reconstruction"
data = {{ source = "band_images", batch_size = 2 }}
metrics = {metrics}
previews = 0
"""


class Bands(atoken.Modality):
    """12-band images ``[12, H, W]`` (H, W multiples of 16) as 16 x 16 x 12 patches."""

    name = "bands"
    sample_ndim = 3

    def __init__(self) -> None:
        self.value_dim = 16 * 16 * 12

    def patchify(self, sample):
        if not isinstance(sample, torch.Tensor) or sample.ndim != 3 or sample.shape[0] != 12:
            raise atoken.ModalityInputError("bands: a [12, H, W] tensor")
        _, H, W = sample.shape
        grid = sample.reshape(12, H // 16, 16, W // 16, 16).permute(1, 3, 2, 4, 0)  # gh gw p p c
        rows, cols = torch.meshgrid(torch.arange(H // 16), torch.arange(W // 16), indexing="ij")
        coords = torch.stack([torch.zeros_like(rows), cols, rows, torch.zeros_like(rows)], -1)
        return grid.reshape(-1, self.value_dim).float(), coords.reshape(-1, 4).int(), {"hw": (H, W)}

    def unpatchify(self, values, coords, meta):
        H, W = meta["hw"]
        out = torch.zeros(H // 16, W // 16, 16, 16, 12)
        out[coords[:, 2].long(), coords[:, 1].long()] = values.reshape(-1, 16, 16, 12)
        return out.permute(4, 0, 2, 1, 3).reshape(12, H, W)

    def grid_shape(self, meta):
        return (1, meta["hw"][0] // 16, meta["hw"][1] // 16)

    def examples(self, seed):
        return [torch.rand(12, 32, 48, generator=torch.Generator().manual_seed(seed))]

    def invalid_examples(self):
        return [torch.rand(3, 32, 32)]


@attrs.define(kw_only=True, slots=False)
class BandImages:
    context: SourceContext = attrs.field(factory=SourceContext)
    batch_size: int = 2
    modality: str = "bands"

    def __attrs_post_init__(self) -> None:
        self.heldout = [torch.rand(12, 32, 32, generator=torch.Generator().manual_seed(9))]
        self.heldout_names = ("held",)

    def batch(self, step, micro=0):
        g = torch.Generator().manual_seed(step * 10 + micro)
        return [torch.rand(12, 32, 32, generator=g) for _ in range(self.batch_size)]


class BandsPlugin:
    @atoken.hookimpl
    def register_modalities(self, register):
        register("bands", Bands)

    @atoken.hookimpl
    def register_data_sources(self, register):
        register("band_images", BandImages)


def _train(tmp_path, metrics: str):
    run = tmp_path / "run.toml"
    run.write_text(RUN.format(out=tmp_path / "out", metrics=metrics))
    return CliRunner().invoke(main, ["train", str(run)])


def test_psnr_on_a_12_band_modality_is_refused_when_the_run_is_built(tmp_path):
    with registered_plugin(BandsPlugin(), name="bands-plugin"):
        refused = _train(tmp_path, '["psnr"]')
        assert refused.exit_code != 0
        message = " ".join(refused.output.split())
        assert (
            "[[tasks]] reconstruction: metric 'psnr' scores picture samples; this task gives it "
            "'array' samples (modality 'bands')"
        ) in message
        assert not (tmp_path / "out" / "metrics.jsonl").exists()  # before step 0
        done = _train(tmp_path, "[]")  # the losses alone train it
        assert done.exit_code == 0, done.output


def test_atoken_eval_picks_the_metrics_registered_for_the_samples(tmp_path):
    folder = tmp_path / "tok"
    atoken.create_tokenizer("tiny", depth=1, decoder_depth=1).save_pretrained(folder)
    data = tmp_path / "clips"
    data.mkdir()
    np.save(data / "a.npy", np.random.default_rng(0).random((3, 4, 32, 32)).astype(np.float32))
    args = ["eval", "--checkpoint", str(folder), "--modality", "video", "--data", str(data)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    names = {line.split()[0] for line in result.output.splitlines() if line[:1].isalpha()}
    assert {"video_psnr", "video_ssim", "flicker"} <= names  # the clip metrics, none other
    assert "psnr" not in names and "chamfer" not in names
    wrong = CliRunner().invoke(main, [*args, "--metrics", "chamfer"])
    assert wrong.exit_code != 0 and "does not score 'video' (clip) samples" in wrong.output
