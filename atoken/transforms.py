"""Transforms of a tokenizer applied before a run trains it (the stage-2 latent expansion).

:func:`expand_latent` widens the ``kl`` latent (the paper's curriculum: 32 channels for images,
48 once video joins): the new mean and log-variance rows of the bottleneck get a fresh
initialisation and the decoder's input columns for the new channels are zero, so the
decoder's output is unchanged at the start (the new channels then learn: their values are
non-zero, so the zero columns get gradients). A run file asks for it with ``[model]
expand_latent = 48``.

Shapes: ``bottleneck.proj`` rows are ``[mean (L) ; logvar (L)]``, ``[2L, C]``;
``decoder.in_proj.weight`` is ``[C, L]``.
"""

from __future__ import annotations

import torch

from atoken.core.errors import ConfigError
from atoken.tokenizer import Tokenizer

__all__ = ["expand_latent"]


@torch.no_grad()
def expand_latent(tokenizer: Tokenizer, latent_dim: int) -> Tokenizer:
    """A tokenizer with the ``kl`` latent widened to ``latent_dim`` channels, every other weight
    copied; the decoder's output is unchanged (new input columns are zero).

    Raises:
        ConfigError: a non-``kl`` bottleneck, no decoder, or a smaller ``latent_dim``.
    """
    cfg = tokenizer.config
    old = cfg.latent_dim
    if cfg.decoder is None or cfg.bottleneck != "kl":
        raise ConfigError(
            f"expand_latent needs a tokenizer with a decoder and the 'kl' bottleneck, got "
            f"bottleneck={cfg.bottleneck!r}"
        )
    if latent_dim < old:
        raise ConfigError(f"expand_latent: latent_dim {latent_dim} < the current {old}")
    if latent_dim == old:
        return tokenizer
    new = Tokenizer(cfg.with_overrides(latent_dim=latent_dim)).to(tokenizer._device())
    state = new.state_dict()
    for key, value in tokenizer.state_dict().items():
        if state[key].shape == value.shape:
            state[key] = value
    L = latent_dim
    for name in ("weight", "bias"):  # proj rows: [mean (L) ; logvar (L)]
        src = tokenizer.state_dict()[f"bottleneck.proj.{name}"]  # [2 * old, ...]
        dst = state[f"bottleneck.proj.{name}"].clone()  # [2 * L, ...], fresh init
        dst[:old] = src[:old]  # mean of the old channels
        dst[L : L + old] = src[old:]  # their log-variance
        state[f"bottleneck.proj.{name}"] = dst
    w = state["decoder.in_proj.weight"].clone()  # [C, L]
    w[:, :old] = tokenizer.state_dict()["decoder.in_proj.weight"]
    w[:, old:] = 0  # the new channels do not change the output at the start
    state["decoder.in_proj.weight"] = w
    new.load_state_dict(state)
    return new.train(tokenizer.training)
