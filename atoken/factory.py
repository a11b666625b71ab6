"""The composition root: where names become the parts of a tokenizer
(:func:`atoken.create_tokenizer` is its entry point).

    create_tokenizer("tiny")                   a preset (its JSON names its modalities)
    create_tokenizer(config)                   a TokenizerConfig (no list: the built-ins)
    create_tokenizer("runs/x/tokenizer")       a folder save_pretrained wrote
    create_tokenizer("tiny", modalities=["image", "pointcloud"], latent_dim=16)

Every registry lookup a model needs happens here (:func:`build_parts`): its modalities, by
name, with their own input projections and heads; the bottleneck; the shared head; the text
encoder; the attention backends; and which plugin provides each modality and its head
(:class:`~atoken.core.boundary.BoundaryChecks`, so the model's checks name them).
:class:`~atoken.core.model.ATokenModel` is built from these parts and knows no registry, so a
model holds exactly the modalities its config names, whatever plugins happen to be installed:
a config without a list gets the modalities atoken ships (:func:`builtin_modalities`), never a
plugin's.

The parts are created in one fixed order (encoder, bottleneck, decoder, shared head, semantic
projection and text tower, then each modality's projection and head in the config's order), so
one seed gives the same weights on every machine.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import attrs
from torch import nn

from atoken.core.boundary import BoundaryChecks
from atoken.core.config import TokenizerConfig, load_preset
from atoken.core.decoder import Decoder
from atoken.core.encoder import Encoder
from atoken.core.errors import ConfigError
from atoken.core.modality import Modality, accepted_arguments, build_modality
from atoken.core.model_size import check_model_size
from atoken.core.projection import ModalityProjections
from atoken.core.semantic import SemanticProjection
from atoken.plugins.manager import DEFAULT_PLUGINS, get_registry
from atoken.text import build_text_encoder

__all__ = [
    "ModelParts",
    "build_bottleneck",
    "build_parts",
    "builtin_modalities",
    "check_modality_keys",
    "check_parameter_name",
    "create_head",
    "default_modality",
    "head_choice",
    "needs_parameters",
    "own_head",
    "parameter_free_modalities",
    "registered_modality",
    "resolve_config",
    "shares_pixel_path",
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


def shares_pixel_path(config: TokenizerConfig, mod: Modality) -> bool:
    """Whether ``mod`` reads through the encoder's shared RGB patch embedding: it says so
    (``shared_pixel_path``) and its values are that embedding's ``patch_dim`` wide. Its
    ``value_dim`` alone never decides it: a 12-band modality of 16 x 16 patches (3072
    values) gets its own projection and head."""
    return mod.shared_pixel_path and mod.value_dim == config.encoder.patch_dim


def own_head(config: TokenizerConfig, name: str, mod: Modality) -> bool:
    """Whether modality ``name`` gets its own head instance (not the shared ``head``): it
    does not share the pixel path, or it names another head or head parameters."""
    if config.decoder is None:
        return False
    head, params = head_choice(config, name, mod)
    shared = head == config.head and shares_pixel_path(config, mod)
    return not shared or bool(params)


def needs_parameters(config: TokenizerConfig, name: str, mod: Modality) -> bool:
    """Whether modality ``name`` needs parameters of its own (a projection or a head)."""
    return not shares_pixel_path(config, mod) or own_head(config, name, mod)


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
    """The built-in modalities that use only shared parameters under ``config`` (the shared
    patch embedding and head): what a tokenizer saved before ``modalities`` was recorded
    holds."""
    out = []
    for name in builtin_modalities():
        if not needs_parameters(config, name, registered_modality(config, name)):
            out.append(name)
    return tuple(out)


def registered_modality(config: TokenizerConfig, name: str) -> Modality:
    """The registered modality ``name`` built for ``config`` (:func:`build_modality` with its
    ``modality_params``)."""
    entry = get_registry().modalities.entry(name)
    params = config.modality_params.get(name)
    return build_modality(name, entry.factory, config, params, plugin=entry.plugin)


def check_modality_keys(config: TokenizerConfig) -> None:
    """Every key of ``modality_params``, ``heads`` and ``head_params`` names a modality of
    ``config.modalities``.

    Raises:
        ConfigError: naming the key, the table and close matches.
    """
    known = list(config.modalities or ())
    registered = get_registry().modalities.names()
    for table in ("modality_params", "heads", "head_params"):
        for key in getattr(config, table):
            if key in known:
                continue
            if key in registered:
                hint = f" Build it for that modality too: modalities=[..., {key!r}]."
            else:
                close = difflib.get_close_matches(key, known + registered, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{table} names {key!r}, which is not a modality of this tokenizer ({known}).{hint}"
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


def builtin_modalities() -> tuple[str, ...]:
    """The registered modalities that atoken's own plugins provide, sorted: what a config
    without a ``modalities`` list is built for (a third-party modality is added by name)."""
    registry = get_registry().modalities
    return tuple(n for n in registry.names() if registry.plugin_of(n) in DEFAULT_PLUGINS)


@attrs.frozen(kw_only=True, eq=False)
class ModelParts:
    """What :func:`build_parts` makes: the keyword arguments of
    :class:`~atoken.core.model.ATokenModel` (:meth:`model_kwargs`) and the text encoder."""

    config: TokenizerConfig
    encoder: Encoder
    projections: ModalityProjections
    modalities: dict[str, Modality]
    default_modality: str
    bottleneck: nn.Module | None
    decoder: Decoder | None
    head: nn.Module | None
    heads: dict[str, nn.Module]
    semantic: SemanticProjection | None
    text: Any  # the TextEncoder, or None
    text_tower: nn.Module | None  # a trainable text encoder's module (trained and saved)
    attention: Any  # a backend name -> its attention function
    boundary: BoundaryChecks  # who provides each modality and its head, for the checks

    def model_kwargs(self) -> dict[str, Any]:
        """Everything :class:`ATokenModel` takes (the text encoder is the tokenizer's)."""
        text = ("text", "text_tower")
        return {
            f.name: getattr(self, f.name) for f in attrs.fields(ModelParts) if f.name not in text
        }


def build_parts(config: TokenizerConfig) -> ModelParts:
    """Build every part of a tokenizer for ``config``, in the fixed order (module docstring);
    ``config.modalities`` None means :func:`builtin_modalities`.

    Raises:
        UnknownComponentError: a name (modality, bottleneck, head, text encoder) no installed
            plugin registers: the message lists close matches.
        ConfigError: a parameter a component does not take, a table keyed by a modality the
            config does not name, or a text encoder without the MAP head.
    """
    names = builtin_modalities() if config.modalities is None else config.modalities
    config = attrs.evolve(config, modalities=tuple(names))
    check_modality_keys(config)
    enc = config.encoder
    encoder = Encoder(enc)
    projections = ModalityProjections(
        patch_dim=enc.patch_dim, width=enc.backbone.width, bias=enc.backbone.bias
    )
    bottleneck = decoder = head = None
    if config.decoder is not None:
        bottleneck = build_bottleneck(config)
        decoder = Decoder(
            config.decoder,
            latent_dim=bottleneck.latent_dim,
            final_norm=config.decoder_final_norm,
            pos_grid=enc.pos_grid if config.decoder_pos_table else None,
        )
        head = create_head(config, config.head, enc.patch_dim, None, {})
    semantic = text = text_tower = None
    if config.text_encoder is not None:
        if not enc.map_head:
            raise ConfigError("a text encoder needs the MAP head (encoder.map_head=True)")
        text = build_text_encoder(config.text_encoder, config.text_encoder_params)
        semantic = SemanticProjection(enc.backbone.width, text.dim)
        if text.trainable:
            text_tower = text.load()  # a module with its weights: trained and saved
    # Last, so the shared parameters initialise alike whatever modalities are named.
    modalities: dict[str, Modality] = {}
    heads: dict[str, nn.Module] = {}
    registry = get_registry()
    plugins, head_names = {}, {}
    for name in config.modalities:
        mod = modalities[name] = registered_modality(config, name)
        plugins[name] = registry.modalities.plugin_of(name)
        if needs_parameters(config, name, mod):
            check_parameter_name(name)
        projections.add(name, mod.value_dim, shared=shares_pixel_path(config, mod))
        head_name = config.head
        if own_head(config, name, mod):
            head_name, params = head_choice(config, name, mod)
            heads[name] = create_head(config, head_name, mod.value_dim, mod, params)
        if config.decoder is not None:
            head_names[name] = (head_name, registry.heads.plugin_of(head_name))
    return ModelParts(
        config=config,
        encoder=encoder,
        projections=projections,
        modalities=modalities,
        default_modality=default_modality(config),
        bottleneck=bottleneck,
        decoder=decoder,
        head=head,
        heads=heads,
        semantic=semantic,
        text=text,
        text_tower=text_tower,
        attention=registry.attention_backends.create,
        boundary=BoundaryChecks(plugins=plugins, heads=head_names),
    )


def resolve_config(
    source: str | os.PathLike | TokenizerConfig, **overrides: Any
) -> TokenizerConfig:
    """The config ``source`` names (a preset name or a :class:`TokenizerConfig`) with flat
    ``overrides`` (:meth:`TokenizerConfig.with_overrides`), checked to fit in memory.

    Raises:
        ConfigError: an unknown preset or override, or weights that would not fit.
    """
    if isinstance(source, TokenizerConfig):
        config = source.with_overrides(**overrides) if overrides else source
        check_model_size(config, overrides=overrides)
        return config
    if not isinstance(source, str):
        raise ConfigError(
            f"create_tokenizer takes a preset name, a TokenizerConfig or a folder, got "
            f"{type(source).__name__}"
        )
    config = load_preset(source).with_overrides(**overrides)
    check_model_size(config, overrides=overrides, preset=source)
    return config
