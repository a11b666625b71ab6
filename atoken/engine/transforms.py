"""Stage transforms: what changes in the tokenizer when a stage of the curriculum starts.

A ``[[stages]]`` table lists them, applied in order when the stage starts::

    [[stages]]
    name = "video"
    transforms = [{ name = "expand_latent", latent_dim = 48 }]

Each is a registered component (``register_stage_transforms``): the factory takes the entry's
parameters and returns ``transform(tokenizer, context)``, which changes the tokenizer in place,
module by module, and keeps ``tokenizer.config`` true to its modules (so ``save_pretrained``
and ``from_pretrained`` rebuild it). The built-ins:

    pca_init       start as the PCA tokenizer of the stage's first task (atoken.engine.pca_init)
    expand_latent  kl latent L -> L' channels; the decoder's output is unchanged at the switch
    to_fsq         kl -> fsq on the posterior mean (the official So/D: 8 groups x [4] * 6)

Shapes: the ``kl`` bottleneck's ``proj`` rows are ``[mean (L) ; logvar (L)]``, ``[2L, C]``;
the ``fsq`` bottleneck's ``proj`` is ``[G * d, C]``; ``decoder.in_proj.weight`` is ``[C, L]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import attrs
import torch
from torch import nn

from atoken.core.errors import ConfigError
from atoken.engine.fsq_calibration import allocate_bits, calibrate, group_levels
from atoken.engine.pca_init import PCA_MAPS, fit_pca, init_from_pca
from atoken.engine.runconfig import StageSpec
from atoken.factory import build_bottleneck
from atoken.plugins.hookspecs import hookimpl

__all__ = [
    "ExpandLatent",
    "PCAInit",
    "StageContext",
    "StageTransform",
    "ToFSQ",
    "expand_latent",
    "to_fsq",
]


@attrs.define(kw_only=True)
class StageContext:
    """What a stage transform sees: the stage, its index, its built tasks and their mixture
    (``mixture.pretrained_prefixes`` are the parameters ``[optim] encoder_lr_mult`` slows)."""

    stage: StageSpec
    index: int = 0
    tasks: Sequence[Any] = ()
    mixture: Any = None


class StageTransform(Protocol):
    """A built stage transform.

    It may also have ``apply_shapes(tokenizer)``: the same change of modules and shapes on a
    tokenizer built on the meta device, without data (``atoken train --plan`` counts each
    stage's parameters with it, :mod:`atoken.engine.plan`). A transform without it is called as
    ``transform(tokenizer, StageContext(stage=...))`` with no tasks, and when that fails the
    plan names it and keeps the previous stage's shapes.
    """

    def __call__(self, tokenizer: nn.Module, context: StageContext) -> None:
        """Change ``tokenizer`` in place."""


def _kl_with_decoder(tokenizer: nn.Module, what: str) -> None:
    cfg = tokenizer.config
    if cfg.decoder is None or cfg.bottleneck != "kl":
        raise ConfigError(
            f"{what} needs a tokenizer with a decoder and the 'kl' bottleneck, got "
            f"bottleneck={cfg.bottleneck!r}"
        )


def _linear_like(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    new = nn.Linear(in_features, out_features, bias=old.bias is not None)
    return new.to(device=old.weight.device, dtype=old.weight.dtype)


@torch.no_grad()
def expand_latent(tokenizer: nn.Module, latent_dim: int) -> nn.Module:
    """Widen the ``kl`` latent to ``latent_dim`` channels, in place; returns the tokenizer.

    The old channels keep their mean and log-variance rows; the new rows get the fresh
    initialisation of the bottleneck (its ``init_logvar``) and the decoder's input columns
    for them are zero, so the decoder's output is unchanged at the switch (the new channels
    then learn: their values are non-zero, so the zero columns get gradients).

    Raises:
        ConfigError: a non-``kl`` bottleneck, no decoder, or a smaller ``latent_dim``.
    """
    _kl_with_decoder(tokenizer, "expand_latent")
    old, L = tokenizer.config.latent_dim, int(latent_dim)
    if old > L:
        raise ConfigError(f"expand_latent: latent_dim {L} < the current {old}")
    if old == L:
        return tokenizer
    config = tokenizer.config.with_overrides(latent_dim=L)
    src = tokenizer.bottleneck
    fresh = build_bottleneck(config).to(src.proj.weight.device, src.proj.weight.dtype)
    w, b = fresh.proj.weight, fresh.proj.bias  # [2L, C], [2L] fresh init
    w[:old], b[:old] = src.proj.weight[:old], src.proj.bias[:old]  # the old channels' mean
    w[L : L + old], b[L : L + old] = src.proj.weight[old:], src.proj.bias[old:]  # log-variance
    tokenizer.bottleneck = fresh.train(src.training)

    dec = tokenizer.decoder
    in_proj = _linear_like(dec.in_proj, L, dec.in_proj.out_features)  # weight [C, L]
    in_proj.weight.zero_()
    in_proj.weight[:, :old] = dec.in_proj.weight  # new channels: zero columns
    if in_proj.bias is not None:
        in_proj.bias.copy_(dec.in_proj.bias)
    dec.in_proj, dec.latent_dim = in_proj, L
    tokenizer.config = config
    return tokenizer


def _latents(tokenizer: nn.Module, calibration: Sequence[tuple[Any, str]]) -> torch.Tensor:
    """The latent ``[N, L]`` (the posterior mean) of the calibration samples."""
    was_training = tokenizer.training
    tokenizer.eval()
    feats = [tokenizer.encode(samples, modality).feats for samples, modality in calibration]
    tokenizer.train(was_training)
    z = torch.cat(feats).double()  # [N, L]
    if z.shape[0] < 2:
        raise ConfigError("to_fsq: calibration needs at least 2 tokens")
    return z


@torch.no_grad()
def to_fsq(
    tokenizer: nn.Module,
    *,
    levels: Sequence[int] = (4,) * 6,
    groups: int = 8,
    scale: float = 1.0,
    calibration: Sequence[tuple[Any, str]] | None = None,
    bits: int | None = None,
) -> nn.Module:
    """Replace the ``kl`` bottleneck by ``fsq`` on its posterior mean, in place.

    The latent keeps its width, so the decoder reads it as before; ``groups * len(levels)``
    must equal ``latent_dim`` (the official So/D: 8 groups of ``[4] * 6`` on the 48-channel
    latent, 96 bits per token). Without ``calibration`` the FSQ projection is the KL mean rows
    times ``scale`` and the decoder is untouched (the official attachment; ``scale`` is
    used only then). With
    ``calibration`` (``[(samples, modality), ...]``, e.g. training batches) each channel ``m``
    of the mean gets the least-error scalar quantizer on those samples: the projection feeds
    FSQ ``f * (m - mu) / sigma`` and the decoder's input map reads the codes as
    ``mu + sigma * g * code`` (``W' = W * sigma * g``, ``b' = b + W mu``), so the decoder's
    output at the switch is the KL one up to the quantization error.

    ``bits`` (with ``calibration``; ``levels`` is then unused): allocate ``bits`` bits per
    token over the channels instead of the same levels everywhere
    (:func:`atoken.engine.fsq_calibration.allocate_bits`, weighted by the decoder's input map), deal
    the channels to ``groups`` codebooks (permuting them, exactly, in the projection and the
    decoder's input map) and give each channel ``2 ** its bits`` levels, some channels 1 (dropped).

    Raises:
        ConfigError: a non-``kl`` bottleneck, levels and groups that do not tile the latent,
            or ``bits`` without calibration.
    """
    _kl_with_decoder(tokenizer, "to_fsq")
    L = tokenizer.config.latent_dim
    levels = [int(v) for v in levels]
    if bits is not None and not calibration:
        raise ConfigError(
            "to_fsq: bits= allocates the levels on calibration samples ([[stages]]: calibrate > 0)"
        )
    if bits is None and groups * len(levels) != L:
        raise ConfigError(
            f"to_fsq: {groups} groups x {len(levels)} levels = {groups * len(levels)} channels, "
            f"the latent has {L} (expand_latent first, or change groups / levels)"
        )
    if not scale > 0:
        raise ConfigError(f"to_fsq: scale must be > 0, got {scale!r}")
    src = tokenizer.bottleneck.proj  # [2L, C]: mean rows first
    weight, bias = src.weight[:L].double(), src.bias[:L].double()  # [L, C], [L]: the mean rows
    in_proj = tokenizer.decoder.in_proj  # weight [C', L]
    m = _latents(tokenizer, calibration).to(weight.device) if calibration else None
    perm = list(range(L))  # latent channel of each FSQ channel
    if bits is not None:  # allocated levels: channels permuted into balanced groups
        sensitivity = in_proj.weight.double().pow(2).sum(0)  # [L]
        perm, levels = group_levels(allocate_bits(m, sensitivity, int(bits)), int(groups))
        weight, bias, m = weight[perm], bias[perm], m[:, perm]
    config = tokenizer.config.with_overrides(
        bottleneck="fsq", bottleneck_params={"levels": levels, "groups": int(groups)}
    )
    fsq = build_bottleneck(config).to(src.weight.device, src.weight.dtype)
    if m is None:
        weight, bias = weight * scale, bias * scale
    else:
        if in_proj.bias is None:
            m = torch.cat([m, -m])  # no bias to add the mean back: a quantizer centred on 0
        mu, sigma, f, g, _ = calibrate(fsq, m)
        weight = weight * (f / sigma)[:, None]  # [L, C]
        bias = (bias - mu) * (f / sigma)
        w_dec = in_proj.weight.double()[:, perm]  # [C', L] in the FSQ channels' order
        if in_proj.bias is not None:
            in_proj.bias.add_((w_dec @ mu).to(in_proj.bias.dtype))
        in_proj.weight.copy_((w_dec * (sigma * g)[None, :]).to(in_proj.weight.dtype))
    fsq.proj.weight.copy_(weight.to(fsq.proj.weight.dtype))
    fsq.proj.bias.copy_(bias.to(fsq.proj.bias.dtype))
    tokenizer.bottleneck = fsq.train(tokenizer.bottleneck.training)
    tokenizer.config = config
    return tokenizer


def _int_at_least(low: int):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            name = type(instance).__name__
            raise ConfigError(f"{name}: {attribute.name} must be an int >= {low}, got {value!r}")

    return check


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        name = type(instance).__name__
        raise ConfigError(f"{name}: {attribute.name} must be a number > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class PCAInit:
    """``pca_init``: fit the PCA on the first task's training crops (``batches`` batches)
    and start as that PCA tokenizer (:func:`atoken.engine.pca_init.init_from_pca`); the PCA maps
    then learn at ``encoder_lr_mult`` x lr. The PCA is kept as ``context.mixture.pca``."""

    batches: int = attrs.field(default=40, validator=_int_at_least(1))

    example_params: ClassVar[dict[str, Any]] = {"batches": 10}  # for the contract tests
    example_tokenizer: ClassVar[dict[str, Any]] = {
        "final_norm": False,
        "decoder_final_norm": False,
        "decoder_bias": True,
    }

    def apply_shapes(self, tokenizer: nn.Module) -> None:
        """No shape changes: the PCA sets values only."""

    def __call__(self, tokenizer: nn.Module, context: StageContext) -> None:
        if not context.tasks:
            raise ConfigError("pca_init fits the PCA on the stage's first task; it has none")
        pca = fit_pca(
            context.tasks[0], latent_dim=tokenizer.config.latent_dim, batches=self.batches
        )
        init_from_pca(tokenizer, pca)
        if context.mixture is not None:
            context.mixture.pca = pca
            context.mixture.pretrained_prefixes = PCA_MAPS


@attrs.frozen(kw_only=True)
class ExpandLatent:
    """``expand_latent``: widen the ``kl`` latent to ``latent_dim`` (:func:`expand_latent`)."""

    latent_dim: int = attrs.field(validator=_int_at_least(1))

    example_params: ClassVar[dict[str, Any]] = {"latent_dim": 48}

    def apply_shapes(self, tokenizer: nn.Module) -> None:
        """:func:`expand_latent` (on the meta device it moves no data)."""
        expand_latent(tokenizer, self.latent_dim)

    def __call__(self, tokenizer: nn.Module, context: StageContext) -> None:
        expand_latent(tokenizer, self.latent_dim)


def _samples(batch: Any) -> Any:
    """The samples of a task's batch (a captioned task's batch is ``(samples, labels)``)."""
    return batch[0] if isinstance(batch, tuple) else batch


@attrs.frozen(kw_only=True)
class ToFSQ:
    """``to_fsq``: the ``kl`` bottleneck becomes ``fsq`` on its mean (:func:`to_fsq`),
    calibrated on the first ``calibrate`` training batches of each of the stage's tasks
    (``calibrate = 0``: the mean rows times ``scale``, decoder untouched). ``bits``: that
    many bits per token allocated over the channels (``levels`` unused; needs calibration)."""

    levels: tuple[int, ...] = attrs.field(default=(4,) * 6, converter=tuple)
    groups: int = attrs.field(default=8, validator=_int_at_least(1))
    scale: float = attrs.field(default=1.0, validator=_positive)
    calibrate: int = attrs.field(default=8, validator=_int_at_least(0))
    bits: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_int_at_least(1))
    )

    example_tokenizer: ClassVar[dict[str, Any]] = {"latent_dim": 48}

    def apply_shapes(self, tokenizer: nn.Module) -> None:
        """The FSQ bottleneck of the same shapes, uncalibrated: allocated ``bits`` give every
        group ``latent_dim / groups`` channels, as uniform levels of that length do."""
        levels = self.levels
        if self.bits is not None:
            _kl_with_decoder(tokenizer, "to_fsq")
            levels = (4,) * (tokenizer.config.latent_dim // self.groups)
        to_fsq(tokenizer, levels=levels, groups=self.groups, scale=self.scale)

    def __call__(self, tokenizer: nn.Module, context: StageContext) -> None:
        calibration = [
            (_samples(task.batch(step, 0)), task.modality)
            for task in context.tasks
            for step in range(self.calibrate)
        ]
        to_fsq(
            tokenizer,
            levels=self.levels,
            groups=self.groups,
            scale=self.scale,
            calibration=calibration or None,
            bits=self.bits,
        )
        mixture = context.mixture
        if mixture is not None:  # the new quantizer and its decoder map learn at the full lr
            fresh = ("bottleneck.", "decoder.in_proj.")
            mixture.pretrained_prefixes = tuple(
                p for p in mixture.pretrained_prefixes if p not in fresh
            )


@hookimpl
def register_stage_transforms(register) -> None:
    register("pca_init", PCAInit)
    register("expand_latent", ExpandLatent)
    register("to_fsq", ToFSQ)
