"""``init_from_pca``: a tokenizer that starts exactly as the PCA tokenizer."""

from __future__ import annotations

import pytest
import torch

from atoken import ConfigError, Tokenizer
from atoken.baselines import PCATokenizer
from atoken.engine.pca_init import init_from_pca, zero_residual_branches
from atoken.engine.runconfig import load_run_file
from atoken.train import run_training

LINEAR = {"final_norm": False, "decoder_final_norm": False, "decoder_bias": True}


def _images(seed: int, n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = 32 + 16 * (i % 3), 48 + 16 * (i % 2)
        coarse = torch.rand(3, h // 8, w // 8, generator=g)
        smooth = torch.nn.functional.interpolate(coarse[None], size=(h, w), mode="bilinear")[0]
        out.append((0.8 * smooth + 0.2 * torch.rand(3, h, w, generator=g)).clamp(0, 1))
    return out


def _tokenizer(**overrides) -> Tokenizer:
    torch.manual_seed(0)
    base = {"depth": 2, "decoder_depth": 2, "latent_dim": 8, **LINEAR}
    return Tokenizer.from_preset("tiny", **{**base, **overrides}).eval()


@pytest.mark.parametrize(
    "norm", [{}, {"input_mean": (0.48, 0.46, 0.41), "input_std": (0.27, 0.26, 0.28)}]
)
def test_starts_as_the_pca_tokenizer(norm):
    pca = PCATokenizer(latent_dim=8).fit(_images(0))
    tok = init_from_pca(_tokenizer(**norm), pca)
    heldout = _images(1, n=3)
    ours, theirs = tok.reconstruct(heldout), pca.reconstruct(heldout)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a.clamp(0, 1), b, atol=1e-4)
    # and it is not the identity: 8 components lose detail that the PCA loses too
    errors = [float((a.clamp(0, 1) - x).abs().max()) for a, x in zip(ours, heldout, strict=True)]
    assert max(errors) > 1e-2


def test_residual_branches_are_zero_and_still_train():
    tok = init_from_pca(_tokenizer(), PCATokenizer(latent_dim=8).fit(_images(0)))
    assert zero_residual_branches(tok.decoder.transformer) == 2
    block = tok.encoder.transformer.blocks[0]
    assert not block.attn.proj.weight.any() and not block.mlp.fc2.weight.any()
    x = torch.randn(5, tok.encoder.width)
    assert torch.equal(block(x, torch.tensor([5]), None), x)  # identity at the start
    tok.train()
    recon, _, _ = tok.autoencode(_images(2, n=2))
    sum(r.square().mean() for r in recon).backward()
    assert block.mlp.fc2.weight.grad.abs().sum() > 0  # but the branch gets a gradient


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"final_norm": True}, "final_norm=false"),
        ({"decoder_final_norm": True}, "decoder_final_norm=false"),
        ({"decoder_bias": False}, "decoder_bias=true"),
        (
            {"bottleneck": "fsq", "bottleneck_params": {"levels": [8, 5, 5, 5]}, "latent_dim": 4},
            "not 'kl'",
        ),
        ({"latent_dim": 6}, "latent_dim is 6"),
    ],
)
def test_requirements_are_typed_errors(overrides, message):
    pca = PCATokenizer(latent_dim=8).fit(_images(0))
    tok = _tokenizer(**overrides)
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    with pytest.raises(ConfigError, match=message):
        init_from_pca(tok, pca)
    assert all(torch.equal(before[k], v) for k, v in tok.state_dict().items())  # untouched


def test_unfitted_pca_is_an_error():
    with pytest.raises(ConfigError, match="not fitted"):
        init_from_pca(_tokenizer(), PCATokenizer(latent_dim=8))


RUN = """
[run]
out_dir = "{out}"
[model]
preset = "tiny"
latent_dim = 8
pca_init = true
{overrides}
[train]
steps = 1
precision = "fp32"
progress = false
[[tasks]]
name = "image_reconstruction"
data = {{ source = "photos", batch_size = 2, crop_min = 32, crop_max = 48 }}
losses = [{{ name = "mse", weight = 1.0 }}]
metrics = ["psnr"]
previews = 1
"""


def test_run_file_pca_init(tmp_path):
    flags = (
        "overrides = { depth = 1, decoder_depth = 1, final_norm = false, "
        "decoder_final_norm = false, decoder_bias = true }"
    )
    path = tmp_path / "run.toml"
    path.write_text(RUN.format(out=tmp_path / "out", overrides=flags))
    trainer, metrics = run_training(load_run_file(path))
    pca = trainer.task.pca
    assert pca is not None and pca.components.shape == (8, 768)
    assert metrics["image_reconstruction/psnr"] > 15  # one small step from PCA-8: still sensible

    path.write_text(RUN.format(out=tmp_path / "bad", overrides=""))
    with pytest.raises(ConfigError, match="final_norm=false"):
        run_training(load_run_file(path))
    with pytest.raises(ConfigError, match="exclude each other"):
        load_run_file(path, model={"init_from": str(tmp_path)})
    with pytest.raises(ConfigError, match="exclude each other"):
        run_training(load_run_file(path, model={"expand_latent": 48}))
    clips = path.read_text().replace("image_reconstruction", "video_reconstruction")
    clips = clips.replace('source = "photos"', 'source = "video_files", clips = ["carphone"]')
    clips = clips.replace('metrics = ["psnr"]', 'metrics = ["video_psnr"]')  # clips' metric
    path.write_text(clips.replace("pca_init = true", "pca_init = true\n" + flags))
    with pytest.raises(ConfigError, match=r"\[3, H, W\] crops"):
        run_training(load_run_file(path))
