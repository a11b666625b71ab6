"""Saving and loading tokenizers: ``config.json`` + ``model.safetensors`` (never unpickled).

``config.json`` records the modalities the tokenizer was built for (``modalities``) and the
plugin that provides each (``modality_plugins``), so exactly those are rebuilt, with their own
projections and heads, before the weights load strictly. A saved modality whose plugin is not
installed is a :class:`CheckpointError` naming the plugin (load with ``modalities=[...]``
without it to leave it and its own weights out); a modality added by an override
(``from_pretrained(folder, modalities=[..., "depth"])``) starts with fresh parameters of its
own; a file written before ``modalities`` was recorded holds the built-in modalities that need
no parameters of their own.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from safetensors.torch import load_file, load_model, save_model

from atoken.core.config import TokenizerConfig
from atoken.core.errors import ConfigError, OutputFolderError
from atoken.engine.checkpoint import CheckpointError

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "WEIGHTS_NAME",
    "check_output_folder",
    "is_tokenizer_folder",
    "load_config",
    "load_pretrained",
    "save_pretrained",
]

FORMAT = "atoken-tokenizer"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: Any, folder: str | os.PathLike) -> Path:
    """Write ``model.config`` and its weights; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from atoken.plugins.manager import get_registry

    registry = get_registry().modalities
    plugins = {m: registry.plugin_of(m) for m in model.config.modalities or () if m in registry}
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "modality_plugins": plugins,
    }
    tmp = folder / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    save_model(model, str(folder / WEIGHTS_NAME))
    os.replace(tmp, folder / CONFIG_NAME)  # the config last: a folder with it is complete
    return folder


_CONFIG_MAX_BYTES = 16 * 2**20  # a config.json is a few KiB: a larger file is not ours
_LISTED = 4  # entries an error names when a folder holds files atoken did not write


def is_tokenizer_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a tokenizer :func:`save_pretrained` wrote: its ``config.json``
    is a JSON object of format ``"atoken-tokenizer"`` (any version)."""
    path = Path(folder) / CONFIG_NAME
    try:
        if not path.is_file() or path.stat().st_size > _CONFIG_MAX_BYTES:
            return False
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def check_output_folder(folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """``folder`` if a new tokenizer may be written there: a missing path, an empty folder, or,
    with ``overwrite``, a tokenizer folder (:func:`is_tokenizer_folder`: its ``config.json``
    and weights are replaced, other files kept). Checked before anything is written.

    Raises:
        OutputFolderError: ``folder`` is a file, holds files atoken did not write (never
            replaced, even with ``overwrite``), or holds a tokenizer and ``overwrite`` is off.
    """
    folder = Path(folder)
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise OutputFolderError("is a file, not a folder", folder=str(folder))
    try:
        entries = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        raise OutputFolderError(f"cannot be listed ({exc})", folder=str(folder)) from exc
    if not entries:
        return folder
    if is_tokenizer_folder(folder):
        if overwrite:
            return folder
        raise OutputFolderError(
            "holds a saved tokenizer; pass --overwrite (overwrite=True) to replace it, or "
            "choose a new folder",
            folder=str(folder),
        )
    shown = ", ".join(entries[:_LISTED]) + (", ..." if len(entries) > _LISTED else "")
    raise OutputFolderError(
        f"is not an atoken tokenizer folder (no {CONFIG_NAME} of format {FORMAT!r}) and holds "
        f"{len(entries)} entries ({shown}) that atoken did not write: choose a new or an empty "
        "folder (--overwrite replaces only a tokenizer folder)",
        folder=str(folder),
    )


def load_config(folder: str | os.PathLike, **overrides: Any) -> TokenizerConfig:
    """The :class:`TokenizerConfig` a tokenizer folder holds (its ``config.json`` only: no
    weight is read), with ``overrides`` applied and the modalities not installed here dropped.

    Raises:
        CheckpointError: no ``config.json`` or ``model.safetensors`` in ``folder``, or a
            ``config.json`` that is not a tokenizer config of this format.
    """
    return _read_config(Path(folder), overrides)[0]


def _read_config(
    folder: Path, overrides: Mapping[str, Any]
) -> tuple[TokenizerConfig, list[str], list[str]]:
    """(config, modalities dropped, modalities added by ``overrides``) of ``folder``."""
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a saved tokenizer: it needs {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    try:
        doc = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise CheckpointError(
            f"{config_path}: expected a JSON object with a 'config' object, got "
            f"{type(doc).__name__ if not isinstance(doc, dict) else 'no config object'}"
        )
    if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: unsupported format {doc.get('format')!r} "
            f"version {doc.get('version')!r}"
        )
    try:
        config = TokenizerConfig.from_dict(doc["config"])
        if config.modalities is None:  # written before modalities were recorded
            from atoken.factory import parameter_free_modalities

            config = attrs.evolve(config, modalities=parameter_free_modalities(config))
        saved = config.modalities
        wanted = overrides.get("modalities")
        if wanted is not None:  # leave saved modalities out before their tables are checked
            config = _only(config, tuple(wanted))
        config = config.with_overrides(**overrides)
    except (ConfigError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{config_path}: invalid config: {exc}") from exc
    _check_installed(config, doc.get("modality_plugins") or {}, config_path)
    dropped = [m for m in saved if m not in config.modalities]
    # Modalities added by an override (not in the file) keep their fresh parameters.
    added = [m for m in config.modalities if m not in saved]
    return config, dropped, added


def load_pretrained(cls: type, folder: str | os.PathLike, **overrides: Any) -> Any:
    """Build ``cls`` from ``folder``'s config and load its safetensors weights strictly."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    config, dropped, added = _read_config(folder, overrides)
    skip = tuple(f"{part}.{name}." for name in dropped for part in _OWN_PARAMETERS)
    fresh = tuple(f"{part}.{name}." for name in added for part in _OWN_PARAMETERS)
    _check_shapes(cls, config, weights_path, config_path, skip=skip, fresh=fresh)
    model = cls(config)
    try:
        if skip or fresh:
            state = {
                k: v for k, v in load_file(str(weights_path)).items() if not k.startswith(skip)
            }
            missing, unexpected = model.load_state_dict(state, strict=False)
            stray = sorted(unexpected) + sorted(k for k in missing if not k.startswith(fresh))
            if stray:
                raise CheckpointError(f"unexpected or missing keys: {stray[:20]}")
        else:
            load_model(model, str(weights_path), strict=True)
    except Exception as exc:
        raise CheckpointError(
            f"the weights in {weights_path} do not match the config in {config_path} "
            f"(a checkpoint from a different config?): {str(exc)[:500]}"
        ) from exc
    return model


def _check_shapes(
    cls: type,
    config: TokenizerConfig,
    weights_path: Path,
    config_path: Path,
    *,
    skip: tuple[str, ...],
    fresh: tuple[str, ...],
) -> None:
    """Compare the parameter shapes ``config`` gives (a model built on the meta device, no
    memory) with the weight file's header, before the real model is allocated.

    Raises:
        CheckpointError: the weight file's header is unreadable, or keys or shapes differ.
    """
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    try:
        with torch.device("meta"):
            probe = cls(config)
    except Exception:  # the real build below raises the config's own error
        return
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items() if not k.startswith(fresh)}
    stored = {k: v for k, v in stored.items() if not k.startswith(skip)}
    problems = [f"{k}: config gives {list(want[k])}, file holds {list(stored[k])}"
                for k in want if k in stored and want[k] != stored[k]]  # fmt: skip
    missing, extra = sorted(want.keys() - stored.keys()), sorted(stored.keys() - want.keys())
    if problems or missing or extra:
        count = {name: sum(math.prod(s) for s in shapes.values())
                 for name, shapes in (("config", want), ("file", stored))}  # fmt: skip
        details = problems[:4] + [f"missing from the file: {k}" for k in missing[:3]]
        details += [f"not in the config: {k}" for k in extra[:3]]
        raise CheckpointError(
            f"{config_path} does not describe the weights in {weights_path} (a checkpoint "
            f"from a different config?): the config gives "
            f"{count['config']:,} parameters, the file holds {count['file']:,} "
            f"({len(problems)} shapes differ, {len(missing)} keys missing, {len(extra)} "
            f"extra), e.g. " + "; ".join(details)
        )


#: Where a tokenizer keeps a modality's own parameters (``<prefix>.<modality>.*``).
_OWN_PARAMETERS = ("projections.inputs", "heads")


def _only(config: TokenizerConfig, kept: tuple[str, ...]) -> TokenizerConfig:
    """``config`` whose per-modality tables keep only the modalities in ``kept``."""
    return attrs.evolve(
        config,
        **{
            table: {k: v for k, v in getattr(config, table).items() if k in kept}
            for table in ("modality_params", "heads", "head_params")
        },
    )


def _check_installed(config: TokenizerConfig, plugins: Mapping[str, Any], source: Path) -> None:
    """Every modality ``config`` names is registered here.

    Raises:
        CheckpointError: naming each missing modality, the plugin the file says provided it,
            and the two ways on (install the plugin, or leave the modality out).
    """
    from atoken.plugins.manager import get_registry

    registry = get_registry().modalities
    missing = [m for m in config.modalities or () if m not in registry]
    if missing:
        named = ", ".join(f"{m!r} (plugin {plugins.get(m, 'unknown')!r})" for m in missing)
        kept = [m for m in config.modalities or () if m not in missing]
        raise CheckpointError(
            f"{source}: the tokenizer was saved with modalities {named} that no installed "
            f"plugin registers: install the plugin, or load with modalities={kept} to leave "
            "them and their own weights out"
        )
