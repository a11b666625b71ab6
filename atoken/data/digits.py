"""scikit-learn's 1797 handwritten digits as captioned images (real data that installs offline).

Each 8 x 8 digit (values 0..16) is scaled to [0, 1], upsampled bilinearly to ``size`` x
``size`` and repeated to 3 channels: ``[3, size, size]`` float32. Its caption comes from its
label: ``"a photo of the digit three"``. The split into train and held-out sets is stratified
per class and fixed by ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from atoken.core.errors import ConfigError

__all__ = [
    "DIGIT_WORDS",
    "CaptionedImages",
    "DigitSampler",
    "digit_caption",
    "load_digit_captions",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_caption(label: int) -> str:
    """The caption of a digit label: ``"a photo of the digit three"``."""
    return f"a photo of the digit {DIGIT_WORDS[int(label)]}"


@attrs.frozen(kw_only=True)
class CaptionedImages:
    """Images ``[B, 3, S, S]`` in [0, 1], their class labels ``[B]`` (indices into
    ``classes``) and the class captions (one per class, the texts the labels index)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[int, ...]
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_captions(self) -> list[str]:
        """The caption of every image."""
        return [self.captions[int(i)] for i in self.labels]


def load_digit_captions(
    *,
    size: int = 64,
    classes: Sequence[int] = (),
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[CaptionedImages, CaptionedImages]:
    """(train, held-out) captioned digits; ``classes`` picks digits (empty: all ten).

    Raises:
        ConfigError: a size below 8, an unknown digit, or a fraction outside (0, 1).
    """
    from sklearn.datasets import load_digits

    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ConfigError(f"digits: size must be an int >= 8, got {size!r}")
    chosen = tuple(int(c) for c in classes) or tuple(range(10))
    if len(set(chosen)) != len(chosen) or any(c not in range(10) for c in chosen):
        raise ConfigError(f"digits: classes must be distinct digits 0..9, got {classes!r}")
    if not 0 < heldout_fraction < 1:
        raise ConfigError(f"digits: heldout_fraction must be in (0, 1), got {heldout_fraction}")
    data = load_digits()
    pixels = torch.from_numpy(data.images).float() / 16.0  # [1797, 8, 8]
    rng = np.random.default_rng(seed)
    train_idx, held_idx = [], []
    for c in chosen:
        idx = rng.permutation(np.flatnonzero(data.target == c))
        n_held = max(1, round(len(idx) * heldout_fraction))
        held_idx += idx[:n_held].tolist()
        train_idx += idx[n_held:].tolist()
    remap = {c: i for i, c in enumerate(chosen)}
    captions = tuple(digit_caption(c) for c in chosen)

    def subset(indices: list[int]) -> CaptionedImages:
        indices = sorted(indices)
        x = pixels[indices][:, None]  # [B, 1, 8, 8]
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()  # [B, 3, S, S]
        labels = torch.tensor([remap[int(data.target[i])] for i in indices])  # [B]
        return CaptionedImages(images=x, labels=labels, classes=chosen, captions=captions)

    return subset(train_idx), subset(held_idx)


class DigitSampler:
    """Deterministic batches of (images ``[b, 3, S, S]``, labels ``[b]``): a function of
    (seed, step, micro-step) only, so resumed runs see the same batches."""

    def __init__(self, data: CaptionedImages, *, batch_size: int, seed: int = 0) -> None:
        if len(data) == 0:
            raise ConfigError("digits: no training images")
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, micro])
        n = len(self.data)
        idx = torch.from_numpy(rng.choice(n, self.batch_size, replace=self.batch_size > n))
        return self.data.images[idx], self.data.labels[idx]
