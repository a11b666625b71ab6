"""The contract of a stage transform, exercised the way a curriculum run uses it.

A run applies a stage's transforms to the tokenizer when the stage starts (with the stage's
built tasks in the :class:`~atoken.engine.transforms.StageContext`), trains it, saves it with
``save_pretrained``, and on ``--resume`` applies them again to a fresh tokenizer before
loading the checkpoint's weights into it. So a transform must leave a tokenizer that

- still encodes and decodes samples of its modality through the public API, finitely;
- has a ``config`` true to its modules: ``Tokenizer(tokenizer.config)`` has the same
  parameters with the same shapes, and ``save_pretrained`` -> ``from_pretrained``
  reconstructs exactly alike;
- trains: a reconstruction loss backpropagates to finite gradients;
- takes its own state dict after the transform ran on another fresh tokenizer (resume).

A factory describes how to exercise it with two optional class attributes:
``example_params`` (the keyword parameters, default none) and ``example_tokenizer`` (overrides
of the tiny preset it applies to, default none)::

    class TestPruneHeads(StageTransformContract):
        name = "prune_heads"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

__all__ = ["StageTransformContract"]


class _ExampleTask:
    """A task giving the default modality's example samples (what ``pca_init`` fits on)."""

    label, weight = "example", 1.0

    def __init__(self, modality: Any) -> None:
        self._modality, self.modality = modality, modality.name

    def batch(self, step: int, micro: int) -> list[Any]:
        return self._modality.examples(step * 7 + micro)


def _fresh(overrides: dict[str, Any]) -> Any:
    from atoken.tokenizer import Tokenizer

    torch.manual_seed(0)
    base = {"depth": 1, "decoder_depth": 1}
    return Tokenizer.from_preset("tiny", **{**base, **overrides})


class StageTransformContract:
    """Subclass with ``name`` set (or override the ``name`` fixture)."""

    name: ClassVar[str] = ""

    @pytest.fixture
    def transform_name(self) -> str:
        if not self.name:
            pytest.fail("set name or override the `transform_name` fixture")
        return self.name

    @pytest.fixture
    def factory(self, transform_name: str) -> Any:
        from atoken import get_registry

        return get_registry().stage_transforms.get(transform_name)

    def _apply(self, factory: Any) -> Any:
        from atoken.engine.runconfig import StageSpec
        from atoken.engine.transforms import StageContext
        from atoken.factory import default_modality

        tokenizer = _fresh(dict(getattr(factory, "example_tokenizer", {})))
        modality = tokenizer.modality(default_modality(tokenizer.config))
        stage = StageSpec(name="contract", steps=1, tasks=())
        context = StageContext(stage=stage, tasks=[_ExampleTask(modality)])
        transform = factory(**dict(getattr(factory, "example_params", {})))
        result = transform(tokenizer, context)
        assert result is None or result is tokenizer, "a transform changes the tokenizer in place"
        return tokenizer, modality

    def test_the_tokenizer_still_round_trips(self, factory: Any) -> None:
        tokenizer, modality = self._apply(factory)
        samples = modality.examples(1)
        with torch.no_grad():
            out = tokenizer.eval().reconstruct(samples, modality.name)
        assert len(out) == len(samples)
        for x in out:
            x = torch.as_tensor(x)
            assert x.is_floating_point() and bool(torch.isfinite(x).all())

    def test_the_config_describes_the_modules(self, factory: Any, tmp_path: Path) -> None:
        from atoken.tokenizer import Tokenizer

        tokenizer, modality = self._apply(factory)
        rebuilt = Tokenizer(tokenizer.config)
        want = {k: tuple(v.shape) for k, v in tokenizer.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == want
        tokenizer.save_pretrained(tmp_path / "tok")
        loaded = Tokenizer.from_pretrained(tmp_path / "tok")
        samples = modality.examples(2)
        with torch.no_grad():
            a = tokenizer.eval().reconstruct(samples, modality.name)
            b = loaded.eval().reconstruct(samples, modality.name)
        for x, y in zip(a, b, strict=True):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))

    def test_it_trains(self, factory: Any) -> None:
        tokenizer, modality = self._apply(factory)
        tokenizer.train()
        samples = [torch.as_tensor(x).float() for x in modality.examples(3)]
        recon, _, _ = tokenizer.autoencode(samples, modality.name)
        loss = sum(
            (torch.as_tensor(r) - s).abs().mean() for r, s in zip(recon, samples, strict=True)
        )
        loss.backward()
        grads = [p.grad for p in tokenizer.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads)

    def test_a_resumed_run_loads_its_weights(self, factory: Any) -> None:
        first, _ = self._apply(factory)
        second, _ = self._apply(factory)  # what --resume builds before loading the checkpoint
        second.load_state_dict(first.state_dict())
        assert second.config == first.config
