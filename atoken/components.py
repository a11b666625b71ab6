"""Building a tokenizer's components from its config and the registries.

* :func:`build_bottleneck`: the registered bottleneck (W_r) for the encoder width.
* :func:`head_choice`, :func:`needs_parameters`: which head decodes a modality and whether the
  modality needs parameters of its own (an input projection when its ``value_dim`` differs
  from the encoder's patch dimension; a head when it is not the shared one).
* :func:`create_head`: a registered head from the documented factory arguments (``width``,
  ``value_dim``, ``bias``, ``modality``, each when accepted) and the config's ``head_params``.
* :func:`parameter_free_modalities`: the registered modalities that need nothing of their own.
* :func:`registered_modality`, :func:`declare_modalities`: build a registered modality for a
  config, and give a tokenizer every declared modality with its own projection and head.

No modality is named here: everything comes from the config and from the modalities.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any

import attrs
from torch import nn

from atoken.core.config import TokenizerConfig
from atoken.core.errors import ConfigError
from atoken.core.modality import Modality, accepted_arguments, build_modality
from atoken.plugins.manager import get_registry

__all__ = [
    "build_bottleneck",
    "check_modality_keys",
    "check_parameter_name",
    "create_head",
    "declare",
    "declare_modalities",
    "default_modality",
    "head_choice",
    "needs_parameters",
    "own_head",
    "parameter_free_modalities",
    "registered_modality",
]


def default_modality(config: TokenizerConfig) -> str:
    """The modality of raw samples when a call names none: ``config.default_modality``, else
    :data:`atoken.modalities.DEFAULT_MODALITY`."""
    if config.default_modality:
        return config.default_modality
    from atoken.modalities import DEFAULT_MODALITY

    return DEFAULT_MODALITY


def build_bottleneck(config: TokenizerConfig) -> nn.Module:
    """The registered bottleneck, given ``in_dim`` and (if it takes it) ``latent_dim``.

    Raises:
        ConfigError: ``bottleneck_params`` names an argument the bottleneck does not take, or
            its latent width differs from ``config.latent_dim``.
    """
    factory = get_registry().bottlenecks.get(config.bottleneck)
    params = {"in_dim": config.encoder.backbone.width, **dict(config.bottleneck_params)}
    accepts, takes_any = accepted_arguments(factory)
    if "latent_dim" in accepts and "latent_dim" not in params:
        params["latent_dim"] = config.latent_dim
    unknown = sorted(set(config.bottleneck_params) - accepts)
    if unknown and not takes_any:
        raise ConfigError(
            f"bottleneck_params: {config.bottleneck!r} takes no {unknown} (it takes "
            f"{sorted(accepts - {'in_dim'})})"
        )
    bottleneck = factory(**params)
    if bottleneck.latent_dim != config.latent_dim:
        raise ConfigError(
            f"bottleneck {config.bottleneck!r} with {dict(config.bottleneck_params)} gives a "
            f"{bottleneck.latent_dim}-channel latent but latent_dim is {config.latent_dim}; "
            f"set latent_dim={bottleneck.latent_dim}"
        )
    return bottleneck


def head_choice(config: TokenizerConfig, name: str, mod: Modality) -> tuple[str, dict[str, Any]]:
    """``(head name, head params)`` of modality ``name``: ``config.heads[name]``, else its
    ``default_head``, else ``config.head``; params from ``config.head_params[name]``."""
    head = config.heads.get(name) or mod.default_head or config.head
    return head, dict(config.head_params.get(name, {}))


def own_head(config: TokenizerConfig, name: str, mod: Modality) -> bool:
    """Whether modality ``name`` gets its own head instance (not the shared ``head``)."""
    if config.decoder is None:
        return False
    head, params = head_choice(config, name, mod)
    shared = head == config.head and mod.value_dim == config.encoder.patch_dim
    return not shared or bool(params)


def needs_parameters(config: TokenizerConfig, name: str, mod: Modality) -> bool:
    """Whether modality ``name`` needs parameters of its own (a projection or a head)."""
    return mod.value_dim != config.encoder.patch_dim or own_head(config, name, mod)


def create_head(
    config: TokenizerConfig,
    head: str,
    value_dim: int,
    mod: Modality | None,
    params: dict[str, Any],
) -> nn.Module:
    """The registered head ``head`` given the documented factory arguments it accepts.

    Raises:
        ConfigError: a parameter the factory does not take, a factory that fails with a
            ``TypeError`` (both naming the head and its plugin), or no decoder.
    """
    entry = get_registry().heads.entry(head)
    names, var_kw = accepted_arguments(entry.factory)
    unknown = sorted(k for k in params if k not in names and not var_kw)
    if unknown:
        raise ConfigError(
            f"head {head!r} (plugin {entry.plugin!r}) does not take {unknown} in "
            f"head_params; it takes {sorted(names)}"
        )
    decoder = config.decoder
    if decoder is None:
        raise ConfigError("this tokenizer has no decoder (config.decoder is None)")
    given = {"width": decoder.width, "value_dim": value_dim, "bias": decoder.bias, "modality": mod}
    kwargs = {k: v for k, v in given.items() if var_kw or k in names}
    kwargs.update(params)
    try:
        return entry.factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"head {head!r} (plugin {entry.plugin!r}) could not be built with "
            f"{sorted(kwargs)}: {exc}"
        ) from exc


def parameter_free_modalities(config: TokenizerConfig) -> tuple[str, ...]:
    """The registered modalities that use only shared parameters under ``config`` (the shared
    patch embedding and head): what a tokenizer saved before ``modalities`` was recorded
    holds."""
    out = []
    for name in get_registry().modalities.names():
        if not needs_parameters(config, name, registered_modality(config, name)):
            out.append(name)
    return tuple(out)


def registered_modality(config: TokenizerConfig, name: str) -> Modality:
    """The registered modality ``name`` built for ``config`` (:func:`build_modality` with its
    ``modality_params``)."""
    entry = get_registry().modalities.entry(name)
    params = config.modality_params.get(name)
    return build_modality(name, entry.factory, config, params, plugin=entry.plugin)


def declare_modalities(tok: Any, implicit: bool) -> None:
    """Build every modality of ``tok.config.modalities`` and its own parameters. With an
    implicit list (every registered modality), one whose factory fails is left out with a
    warning naming its plugin, so one broken plugin does not stop every tokenizer (unless
    the config gives it parameters or a head: then the error is the user's to see)."""
    check_modality_keys(tok.config)
    kept = []
    for name in tok.config.modalities:
        try:
            declare(tok, name)
        except ConfigError as exc:
            cfg = tok.config
            named = name in cfg.modality_params or name in cfg.heads or name in cfg.head_params
            if not implicit or named:  # the user asked for it: their config is wrong
                raise
            warnings.warn(f"modality {name!r} left out of the tokenizer: {exc}", stacklevel=3)
            continue
        kept.append(name)
    if len(kept) != len(tok.config.modalities):
        tok.config = attrs.evolve(tok.config, modalities=tuple(kept))


def declare(tok: Any, name: str) -> None:
    """Build modality ``name`` on ``tok`` and the parameters it needs (projection, own head)."""
    mod = tok.modality(name)
    if needs_parameters(tok.config, name, mod):
        check_parameter_name(name)
    tok.projections.add(name, mod.value_dim)
    if own_head(tok.config, name, mod):
        head_name, params = head_choice(tok.config, name, mod)
        tok.heads[name] = create_head(tok.config, head_name, mod.value_dim, mod, params)


def check_modality_keys(config: TokenizerConfig) -> None:
    """Every key of ``modality_params``, ``heads`` and ``head_params`` names a modality of
    ``config.modalities``.

    Raises:
        ConfigError: naming the key, the table and close matches.
    """
    known = list(config.modalities or ())
    for table in ("modality_params", "heads", "head_params"):
        for key in getattr(config, table):
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ConfigError(
                    f"{table} names {key!r}, which is not a modality of this tokenizer "
                    f"({known}).{hint}"
                )


#: Names a module dict cannot hold (attributes of ``nn.ModuleDict``).
_RESERVED = frozenset(dir(nn.ModuleDict()))


def check_parameter_name(name: str) -> None:
    """A modality with parameters of its own is a key of ``projections``/``heads``.

    Raises:
        ConfigError: a name with a '.' or one that ``nn.ModuleDict`` reserves.
    """
    if "." in name or name in _RESERVED:
        raise ConfigError(
            f"modality {name!r} needs parameters of its own, but a module dict cannot hold "
            "that name (no '.', and none of nn.ModuleDict's attributes): rename it"
        )
