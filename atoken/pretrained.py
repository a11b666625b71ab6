"""Saving and loading tokenizers: ``config.json`` + ``model.safetensors`` (never unpickled)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model

from atoken.core.checkpoint import CheckpointError
from atoken.core.config import TokenizerConfig
from atoken.core.errors import ConfigError

__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "load_pretrained", "save_pretrained"]

FORMAT = "atoken-tokenizer"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: Any, folder: str | os.PathLike) -> Path:
    """Write ``model.config`` and its weights; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "config": model.config.to_dict()}
    tmp = folder / f".{CONFIG_NAME}.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    save_model(model, str(folder / WEIGHTS_NAME))
    os.replace(tmp, folder / CONFIG_NAME)  # the config last: a folder with it is complete
    return folder


def load_pretrained(cls: type, folder: str | os.PathLike, **overrides: Any) -> Any:
    """Build ``cls`` from ``folder``'s config and load its safetensors weights strictly."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a saved tokenizer: it needs {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    try:
        doc = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    if doc.get("format") != FORMAT or doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: unsupported format {doc.get('format')!r} "
            f"version {doc.get('version')!r}"
        )
    try:
        config = TokenizerConfig.from_dict(doc["config"]).with_overrides(**overrides)
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{config_path}: invalid config: {exc}") from exc
    model = cls(config)
    try:
        load_model(model, str(weights_path), strict=True)
    except Exception as exc:
        raise CheckpointError(
            f"the weights in {weights_path} do not match the config in {config_path} "
            f"(a checkpoint from a different config?): {str(exc)[:500]}"
        ) from exc
    return model
