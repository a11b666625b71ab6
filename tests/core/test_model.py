"""``model(batch)`` is the training step: one pass, the same numbers as the raw-sample API."""

from __future__ import annotations

import pytest
import torch

from atoken.core.batch import PackedBatch
from atoken.core.errors import UnknownModalityError
from atoken.core.model import ATokenModel, ModelOutput
from atoken.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    model = Tokenizer.from_preset("tiny", modalities=["image", "video", "depth"])
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                torch.nn.init.normal_(p, std=0.02)
    return model.eval()


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 32, 48, generator=g), torch.rand(3, 40, 24, generator=g)]


def test_forward_is_autoencode_in_one_pass(tok):
    images = _images()
    batch = tok.prepare(images, "image")
    assert isinstance(batch, PackedBatch)
    with torch.no_grad():
        out = tok(batch, embed=True)
        recon, latent, bottleneck = tok.autoencode(images, "image")
    assert isinstance(out, ModelOutput)
    assert out.latent.equal(latent) and out.features.channels == tok.encoder.width
    assert set(out.bottleneck.terms) == set(bottleneck.terms)
    for a, b in zip(out.samples, recon, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(out.embedding, tok.embed(images, "image"))


def test_forward_of_a_mixed_batch_decodes_each_modality(tok):
    g = torch.Generator().manual_seed(1)
    samples = [torch.rand(3, 16, 32, generator=g), torch.rand(24, 20, generator=g)]
    with torch.no_grad():
        out = tok(tok.prepare(samples, ["image", "depth"]), decode=True)
        alone = tok.reconstruct(samples[1:], "depth")
    assert [tuple(s.shape) for s in out.samples] == [(3, 16, 32), (24, 20)]
    assert torch.allclose(out.samples[1], alone[0], atol=1e-5)
    with torch.no_grad():
        lean = tok(tok.prepare(samples, ["image", "depth"]), decode=False)
    assert lean.samples is None and lean.embedding is None


def test_the_image_task_trains_through_forward(tmp_path, monkeypatch):
    from atoken.engine.runconfig import load_run_file
    from atoken.train import build_run

    run = tmp_path / "run.toml"
    run.write_text(
        '[model]\npreset = "tiny"\noverrides = { depth = 1, decoder_depth = 1 }\n'
        '[[tasks]]\nname = "image_reconstruction"\n'
        'data = { source = "photos", batch_size = 2, crop_min = 32, crop_max = 32 }\n'
    )
    model, mixture = build_run(load_run_file(run))
    (task,) = mixture.tasks
    calls = []
    original = ATokenModel.forward

    def spy(self, batch, **kwargs):
        calls.append(type(batch))
        return original(self, batch, **kwargs)

    monkeypatch.setattr(ATokenModel, "forward", spy)
    loss, _logs = task.loss(model, task.batch(0, 0))
    assert calls == [PackedBatch] and loss.ndim == 0 and bool(torch.isfinite(loss))
    loss.backward()
    assert model.head.proj.weight.grad is not None


def test_the_base_model_is_built_from_its_parts_and_resolves_no_names(tok):
    from atoken.factory import build_parts

    parts = build_parts(tok.config.with_overrides(modalities=["image"]))
    model = ATokenModel(**parts.model_kwargs()).eval()
    assert model.modalities == ("image",) and model.default_modality() == "image"
    with pytest.raises(UnknownModalityError, match="'video'"):
        model.modality("video")  # a lookup in the model: no registry is asked
    images = _images()
    with torch.no_grad():
        recon = model.decode(model.encode(images))
    assert [tuple(r.shape) for r in recon] == [tuple(i.shape) for i in images]
