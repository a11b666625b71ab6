"""Interfaces of the model components that plugins provide besides modalities.

Shapes: N tokens, C_in encoder width (``in_dim``), C latent channels (``latent_dim``),
G id groups of a discrete bottleneck.

* A **bottleneck** (W_r) is a ``torch.nn.Module`` mapping encoder tokens ``[N, in_dim]`` to a
  :class:`BottleneckOutput`. A discrete one also offers ``quantize(z) -> (z_q, ids)`` and
  ``ids_to_codes(ids) -> z_q`` that round-trip exactly.
* A **loss** is a callable ``loss(prediction, target, context) -> scalar tensor``;
  ``context`` is a mapping of extras (the latent, bottleneck terms, the step...), possibly empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

__all__ = ["Bottleneck", "BottleneckOutput", "DiscreteBottleneck", "Loss"]


@attrs.frozen(kw_only=True)
class BottleneckOutput:
    """What a bottleneck returns.

    Attributes:
        latent: ``[N, latent_dim]`` the latent fed to the decoder.
        ids: int ``[N, G]`` code ids of a discrete bottleneck, else ``None``.
        terms: named scalar terms it exports (e.g. ``{"kl": ...}``) for the losses.
    """

    latent: torch.Tensor
    ids: torch.Tensor | None = None
    terms: Mapping[str, torch.Tensor] = attrs.field(factory=dict)


@runtime_checkable
class Bottleneck(Protocol):
    """``forward(x [N, in_dim]) -> BottleneckOutput`` with ``latent [N, latent_dim]``.

    A bottleneck may declare ``exports``, the names of the terms its output carries
    (``("kl",)``): a run checks before step 0 that what its ``"terms"`` losses read
    (their ``reads``) is exported by the bottleneck each stage will have.
    """

    in_dim: int
    latent_dim: int

    def __call__(self, x: torch.Tensor) -> BottleneckOutput: ...


@runtime_checkable
class DiscreteBottleneck(Bottleneck, Protocol):
    """A bottleneck with code ids: ``ids_to_codes(quantize(z)[1]) == quantize(z)[0]``."""

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Loss(Protocol):
    """``loss(prediction, target, context) -> scalar tensor``.

    Optional attributes: ``inputs`` (what it consumes, ``"samples"`` by default;
    docs/losses.md#inputs) and, for a ``"terms"`` loss, ``reads``: the bottleneck terms it
    reads from ``context`` (checked against the bottleneck's ``exports`` before step 0).
    """

    def __call__(
        self, prediction: Any, target: Any, context: Mapping[str, Any]
    ) -> torch.Tensor: ...
