"""The modality contract: how raw samples become sparse 4D tokens and back.

A modality turns one raw sample into ``values [n, d]`` (d = ``value_dim``, the flattened patch),
``coords int32 [n, 4]`` (t, x, y, z) and a metadata dict that holds whatever ``unpatchify``
needs to invert it exactly (original size, grid shape, ...). Subclass :class:`Modality` and
register the class through the ``register_modalities`` hook.

A modality whose ``value_dim`` differs from the backbone's patch dimension gets its own
input/output projection in the model (see :class:`atoken.core.projection.ModalityProjections`),
so a one-channel modality plugs in without padding tricks.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from atoken.core.errors import ModalityInputError
from atoken.core.latent import SparseLatent

__all__ = ["Modality", "check_positive_ints"]


def check_positive_ints(owner: str, **values: Any) -> None:
    """Raise :class:`ModalityInputError` naming the first of ``values`` that is not an int >= 1
    (a modality's constructor arguments: ``check_positive_ints("image", patch_size=16)``)."""
    for label, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ModalityInputError(f"{owner}: {label} must be a positive int, got {value!r}")


class Modality(abc.ABC):
    """Base class of every modality.

    Class attributes a subclass sets:
        name: the registry name, stored in every latent made from it.
        layout: the grid layout of its coordinates, ``"thw"`` or ``"xyz"``
            (see :mod:`atoken.core.coords`).
        sample_ndim: the dimensions of one sample given as a tensor (images ``[C, H, W]``: 3,
            clips ``[C, T, H, W]``: 4); a tensor with one more dimension is a batch.

    Instance attribute:
        value_dim: the size d of one token's values.
    """

    name: ClassVar[str]
    layout: ClassVar[str] = "thw"
    sample_ndim: ClassVar[int] = 3
    value_dim: int

    def check_values(self, values: torch.Tensor) -> None:
        """Raise :class:`ModalityInputError` unless ``values`` is ``[n, value_dim]``."""
        if values.ndim != 2 or values.shape[1] != self.value_dim:
            raise ModalityInputError(
                f"{self.name}: values must be [n, {self.value_dim}], got {tuple(values.shape)}"
            )

    @abc.abstractmethod
    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One raw sample -> ``(values [n, value_dim] float32, coords int32 [n, 4], meta)``.

        Raises:
            ModalityInputError: for a sample this modality cannot represent.
        """

    @abc.abstractmethod
    def unpatchify(self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]) -> Any:
        """Invert :meth:`patchify`: ``unpatchify(*patchify(x))`` equals ``x`` (as a tensor)."""

    @abc.abstractmethod
    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        """The token grid of a sample, in this modality's ``layout`` (coords lie inside it)."""

    @abc.abstractmethod
    def examples(self, seed: int) -> list[Any]:
        """A few small valid samples drawn from ``seed``, for contract tests and demos."""

    @abc.abstractmethod
    def invalid_examples(self) -> list[Any]:
        """Inputs that :meth:`patchify` must reject with :class:`ModalityInputError`."""

    # ------------------------------------------------------------------------ batch helpers
    def pack(self, samples: Sequence[Any]) -> SparseLatent:
        """Patchify each sample and pack them: feats are the token values ``[N, value_dim]``."""
        if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
            raise ModalityInputError(
                f"{self.name}: pack() takes a sequence of samples, got {type(samples).__name__}"
            )
        parts = [self.patchify(s) for s in samples]
        if not parts:
            return SparseLatent(
                torch.zeros(0, self.value_dim),
                torch.zeros(0, 4, dtype=torch.int32),
                torch.zeros(0, dtype=torch.int64),
                modality=(),
                meta=(),
            )
        return SparseLatent(
            torch.cat([v for v, _, _ in parts]),
            torch.cat([c for _, c, _ in parts]),
            torch.tensor([v.shape[0] for v, _, _ in parts], dtype=torch.int64),
            modality=self.name,
            meta=[m for _, _, m in parts],
        )

    def unpack(self, latent: SparseLatent) -> list[Any]:
        """Unpatchify every sample of a latent whose feats are token values."""
        out = []
        for b, part in enumerate(latent.unpack()):
            if part.modality[0] != self.name:
                raise ModalityInputError(
                    f"{self.name}: sample {b} of the latent is {part.modality[0]!r}"
                )
            out.append(self.unpatchify(part.feats, part.coords, part.meta[0]))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, value_dim={self.value_dim})"
