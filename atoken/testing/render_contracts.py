"""The contract every registered Gaussian renderer passes; plugin authors subclass it.

    from atoken.testing.render_contracts import RendererContract

    class TestMySplatter(RendererContract):
        renderer_name = "my_splatter"

It renders random scenes (:func:`atoken.testing.strategies.gaussian_sets`) the way the 3D task
does, through the registry, and checks shapes, the background of an empty scene, gradients
reaching every Gaussian parameter, and agreement with the ``torch`` reference (image and
gradients, in float64). A renderer whose class sets ``requires_cuda = True`` is skipped on a
machine without CUDA.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from atoken.plugins.manager import get_registry
from atoken.testing.strategies import gaussian_sets

__all__ = ["RendererContract"]

_PARAMS = ("means", "scales", "quats", "opacities", "sh0")
_checks = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    max_examples=10,
    deadline=None,
)


def _cameras(views: int = 2, size: int = 24) -> Any:
    from atoken.modalities.mesh.cameras import sphere_cameras

    return sphere_cameras(views, size)


def _render_with_grads(renderer: Any, scene: Any, camera: Any, weights: torch.Tensor):
    from atoken.modalities.mesh.gaussians import GaussianSet

    leaves = {k: getattr(scene, k).clone().requires_grad_() for k in _PARAMS}
    out = renderer(GaussianSet(**leaves), camera)
    loss = (out.rgb * weights).sum() + out.alpha.square().sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    pairs = zip(grads, leaves.values(), strict=True)
    return out, [torch.zeros_like(v) if g is None else g for g, v in pairs]


class RendererContract:
    """Shapes, empty scenes, gradients and agreement with the reference renderer."""

    renderer_name: ClassVar[str] = ""
    renderer_params: ClassVar[Mapping[str, Any]] = {}
    #: Absolute tolerance against the reference, in float64.
    tolerance: ClassVar[float] = 1e-8

    @pytest.fixture
    def renderer_name_under_test(self) -> str:
        """The renderer under test (override to parametrize)."""
        if not self.renderer_name:
            pytest.fail("set renderer_name or override the `renderer_name_under_test` fixture")
        return self.renderer_name

    @pytest.fixture
    def renderer(self, renderer_name_under_test: str) -> Any:
        registry = get_registry().renderers
        factory = registry.get(renderer_name_under_test)
        if getattr(factory, "requires_cuda", False) and not torch.cuda.is_available():
            pytest.skip(f"renderer {renderer_name_under_test!r} needs CUDA")
        return registry.create(renderer_name_under_test, **self.renderer_params)

    def test_empty_scene_is_the_background(self, renderer: Any) -> None:
        from atoken.modalities.mesh.gaussians import GaussianSet

        empty = GaussianSet(
            means=torch.zeros(0, 3),
            scales=torch.zeros(0, 3),
            quats=torch.zeros(0, 4),
            opacities=torch.zeros(0),
            sh0=torch.zeros(0, 3),
        )
        out = renderer(empty, _cameras(2, 8))
        assert out.rgb.shape == (2, 3, 8, 8) and out.alpha.shape == (2, 8, 8)
        assert not bool(out.alpha.any())

    @_checks
    @given(scene=gaussian_sets(min_gaussians=1, max_gaussians=16))
    def test_matches_the_reference_with_gradients(self, renderer: Any, scene: Any) -> None:
        reference = get_registry().renderers.create("torch", **self.renderer_params)
        camera = _cameras()
        weights = torch.linspace(-1, 1, 2 * 3 * 24 * 24, dtype=torch.float64).reshape(2, 3, 24, 24)
        ours, grads = _render_with_grads(renderer, scene, camera, weights)
        ref, ref_grads = _render_with_grads(reference, scene, camera, weights)
        assert ours.rgb.shape == ref.rgb.shape and ours.alpha.shape == ref.alpha.shape
        assert bool(((ours.alpha >= 0) & (ours.alpha <= 1)).all())
        assert torch.allclose(ours.rgb, ref.rgb, atol=self.tolerance, rtol=0)
        assert torch.allclose(ours.alpha, ref.alpha, atol=self.tolerance, rtol=0)
        for name, g, r in zip(_PARAMS, grads, ref_grads, strict=True):
            assert bool(torch.isfinite(g).all()), name
            scale = 1 + float(r.abs().max())
            assert torch.allclose(g, r, atol=self.tolerance * 100 * scale, rtol=1e-6), name
