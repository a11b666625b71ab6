"""The testing kit for plugin and test authors.

* :mod:`atoken.testing.strategies`: Hypothesis strategies (its ``__all__``: latents of either
  layout, images, videos, meshes, voxels, Gaussians, mixed-modality batches, decodable
  latents, tiling plans, FSQ levels; the 3D and tokenizer ones live in
  :mod:`~atoken.testing.geometry_strategies` and :mod:`~atoken.testing.tokenizer_strategies`)
  and the ``default``/``ci``/``nightly`` profiles.
* :mod:`atoken.testing.contracts`: contract test classes to subclass (needs pytest), and
  :func:`~atoken.testing.contracts.same_sample` (sets compared as sets).
* :func:`registered_plugin`: register a throwaway plugin for one test.
* :func:`assert_latent_equal`: exact comparison of two latents with a readable failure.
"""

from __future__ import annotations

import torch

from atoken.core.latent import SparseLatent
from atoken.testing.plugins import registered_plugin

__all__ = ["assert_latent_equal", "registered_plugin"]


def assert_latent_equal(actual: SparseLatent, expected: SparseLatent) -> None:
    """Raise ``AssertionError`` naming the first field where two latents differ."""
    for field in ("feats", "coords", "seqlens"):
        a, e = getattr(actual, field), getattr(expected, field)
        if a.shape != e.shape or a.dtype != e.dtype or not torch.equal(a, e):
            raise AssertionError(
                f"{field} differ: {tuple(a.shape)} {a.dtype} vs {tuple(e.shape)} {e.dtype}"
            )
    if actual.modality != expected.modality:
        raise AssertionError(f"modality differ: {actual.modality} vs {expected.modality}")
    if actual.meta != expected.meta:
        raise AssertionError(f"meta differ: {actual.meta} vs {expected.meta}")
