"""The shape every text encoder has, and the cache of frozen text embeddings.

Shapes: T texts in, ``[T, D]`` float32 embeddings out, L2-normalised (D is ``dim``).

A text encoder knows ``dim`` without loading its weights (so a tokenizer can build its
projection W_s cheaply); weights load on the first :meth:`TextEncoder.encode`. A frozen encoder
(the default) caches the embedding of every text it has seen, so a fixed caption set (class
prompts, a dataset's captions) is encoded once. A trainable one (``trainable=True``, set from
the run file) is never cached and returns embeddings with gradients.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import ModalityInputError

__all__ = ["TextEncoder", "check_texts"]


def check_texts(texts: Sequence[str], who: str) -> list[str]:
    """``texts`` as a list of str; a bare string or a non-string item is a typed error."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise ModalityInputError(f"{who}: texts must be a list of str, got {type(texts).__name__}")
    out = list(texts)
    bad = [t for t in out if not isinstance(t, str)]
    if bad:
        raise ModalityInputError(f"{who}: texts must be str, got {type(bad[0]).__name__}")
    return out


class TextEncoder(nn.Module, abc.ABC):
    """A text tower: ``encode(texts) -> [T, dim]`` L2-normalised float32 embeddings.

    Subclasses set ``name`` and ``dim`` and implement :meth:`_embed` (tokenise and run the
    tower, unnormalised) and :meth:`_load` (build the tower on first use).

    Args:
        trainable: train the tower with the tokenizer (no cache, gradients flow).
    """

    name: str = ""
    dim: int = 0

    def __init__(self, *, trainable: bool = False) -> None:
        super().__init__()
        self.trainable = bool(trainable)
        self._cache: dict[str, torch.Tensor] = {}

    @abc.abstractmethod
    def _load(self) -> None:
        """Build the tower (called once, before the first :meth:`_embed`)."""

    @abc.abstractmethod
    def _embed(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """Texts -> unnormalised embeddings ``[T, dim]`` on ``device``."""

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return getattr(self, "_loaded", False)

    def load(self) -> TextEncoder:
        """Load the weights now (they load on the first :meth:`encode` otherwise)."""
        self._ensure_loaded()
        return self

    def _ensure_loaded(self) -> None:
        if not self.loaded:
            self._load()
            self._loaded = True
            if not self.trainable:
                self.requires_grad_(False)
                self.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        return super().train(mode and self.trainable)

    def encode(
        self, texts: Sequence[str], device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Texts -> ``[T, dim]`` L2-normalised float32 embeddings (cached when frozen).

        Raises:
            ModalityInputError: texts is not a list of str.
            WeightsNotFoundError: the tower's weights are not on this machine.
        """
        texts = check_texts(texts, self.name or type(self).__name__)
        device = torch.device(device) if device is not None else torch.device("cpu")
        if not texts:
            return torch.zeros(0, self.dim, device=device)
        self._ensure_loaded()
        if self.trainable:
            return F.normalize(self._embed(texts, device).float(), dim=-1)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            with torch.no_grad():
                fresh = F.normalize(self._embed(missing, device).float(), dim=-1)  # [M, D]
            for text, row in zip(missing, fresh.cpu(), strict=True):
                self._cache[text] = row
        return torch.stack([self._cache[t] for t in texts]).to(device)  # [T, D]

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Same as :meth:`encode` on the tower's device."""
        return self.encode(texts, next(self.parameters(), torch.zeros(())).device)

    def cache_size(self) -> int:
        """How many texts have a cached embedding."""
        return len(self._cache)
