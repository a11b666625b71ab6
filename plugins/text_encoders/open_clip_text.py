"""The ``open_clip_text`` text encoder: an open_clip text tower built alone from a local file.

Shapes: T texts -> token ids ``[T, L]`` (L the tower's context length, 64 for SigLIP2) ->
``[T, D]`` (D the model's ``embed_dim``: 1152 for SigLIP2-So400m).

Only the text tower is built and filled (the ``text.*`` keys of an open_clip checkpoint whose
model has a separate text tower, as every SigLIP/SigLIP2 one), so the vision trunk is neither
held in memory nor needed by the installed open_clip: the text tower of
``ViT-SO400M-16-SigLIP2-naflex`` (AToken's text side) loads with an open_clip release that does
not know that name yet. The model config comes from ``model_cfg``, else the
``open_clip_config.json`` beside the checkpoint (the Hugging Face ``timm/...`` folders carry
one), else open_clip's config of ``model_name``. The tokenizer is a local Hugging Face
tokenizer folder (``tokenizer``, else the checkpoint's folder when it holds one) read with the
model's own options (SigLIP2: Gemma, ``clean="canonicalize"``). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.losses.weight_files import explicit_file
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.text_encoders._base import TextEncoder

__all__ = ["OpenCLIPTextTower", "text_model_config"]

#: Names whose text tower equals another name's (open_clip main's JSON files: the same
#: ``embed_dim`` and ``text_cfg``), for open_clip releases that lack the first name.
_SAME_TEXT_TOWER = {"ViT-SO400M-16-SigLIP2-naflex": "ViT-SO400M-16-SigLIP2-256"}
_CONFIG_FILE = "open_clip_config.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def text_model_config(
    model_name: str | None,
    model_cfg: Mapping[str, Any] | None = None,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """The open_clip model config (``embed_dim``, ``text_cfg``) of the tower: ``model_cfg``,
    else the ``open_clip_config.json`` beside ``checkpoint``, else open_clip's ``model_name``.

    Raises:
        ConfigError: no config found, or one without a separate text tower.
    """
    cfg: Mapping[str, Any] | None = model_cfg
    if cfg is None and checkpoint is not None and (checkpoint.parent / _CONFIG_FILE).is_file():
        cfg = json.loads((checkpoint.parent / _CONFIG_FILE).read_text()).get("model_cfg")
    if cfg is None and model_name:
        import open_clip

        cfg = open_clip.get_model_config(model_name) or open_clip.get_model_config(
            _SAME_TEXT_TOWER.get(model_name, model_name)
        )
    if cfg is None:
        raise ConfigError(
            f"open_clip_text: no model config for {model_name!r}: give model_cfg, a known "
            f"model_name, or put the checkpoint beside its {_CONFIG_FILE}"
        )
    if "text_cfg" not in cfg or "embed_dim" not in cfg:
        raise ConfigError("open_clip_text: the model config needs 'embed_dim' and 'text_cfg'")
    if cfg["text_cfg"].get("hf_model_name"):
        raise ConfigError("open_clip_text: towers of Hugging Face text models are not supported")
    return dict(cfg)


class OpenCLIPTextTower(TextEncoder):
    """The text tower of an open_clip model (``text.*`` of its checkpoint), frozen unless
    ``trainable``.

    Args:
        pretrained: a local open_clip checkpoint (``.safetensors``, or ``.bin``/``.pt`` read
            with ``weights_only=True``), whole model or text tower alone (``text.*`` keys).
        model_name: an open_clip model name (default ``"ViT-SO400M-16-SigLIP2-naflex"``).
        model_cfg: the open_clip model config (``embed_dim``, ``text_cfg``); overrides the
            checkpoint folder's ``open_clip_config.json`` and ``model_name``.
        tokenizer: a local Hugging Face tokenizer folder (default: the checkpoint's folder if it
            holds ``tokenizer.json`` or ``tokenizer_config.json``).
        trainable: fine-tune the tower.

    Raises:
        WeightsNotFoundError: ``pretrained`` is not a local file, or no tokenizer folder.
        ConfigError: no model config, or a checkpoint without the tower's keys (on load).
    """

    name = "open_clip_text"

    def __init__(
        self,
        *,
        pretrained: str | os.PathLike | None = None,
        model_name: str = "ViT-SO400M-16-SigLIP2-naflex",
        model_cfg: Mapping[str, Any] | None = None,
        tokenizer: str | os.PathLike | None = None,
        trainable: bool = False,
    ) -> None:
        super().__init__(trainable=trainable)
        how = (
            "Nothing is downloaded: pass pretrained='/path/to/open_clip_model.safetensors' "
            f"(the local open_clip checkpoint of {model_name!r}, e.g. the Hugging Face folder "
            f"timm/{model_name}) and tokenizer='/path/to/tokenizer/folder' if that folder holds "
            "no tokenizer."
        )
        if pretrained is None:
            raise WeightsNotFoundError(f"open_clip_text: no weights. {how}")
        self.weights_path = explicit_file(
            pretrained, f"open_clip_text: pretrained={os.fspath(pretrained)!r} is not a file. {how}"
        )
        self.model_name = model_name
        self.model_cfg = text_model_config(model_name, model_cfg, self.weights_path)
        self.dim = int(self.model_cfg["embed_dim"])
        folder = Path(os.fspath(tokenizer)).expanduser() if tokenizer else self.weights_path.parent
        if not (folder.is_dir() and any((folder / f).is_file() for f in _TOKENIZER_FILES)):
            raise WeightsNotFoundError(
                f"open_clip_text: no Hugging Face tokenizer in {str(folder)!r}. {how}"
            )
        self.tokenizer_path = folder
        self.tower: torch.nn.Module | None = None

    @staticmethod
    def planned(
        *,
        pretrained: str | os.PathLike | None = None,
        model_name: str = "ViT-SO400M-16-SigLIP2-naflex",
        model_cfg: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> tuple[int, int]:
        """``(dim, parameters)`` of the tower without its weights (built on the meta device).

        Raises:
            ConfigError: no model config.
        """
        from open_clip.model import _build_text_tower

        where = Path(os.fspath(pretrained)).expanduser() if pretrained else None
        cfg = text_model_config(model_name, model_cfg, where)
        with torch.device("meta"):
            tower = _build_text_tower(int(cfg["embed_dim"]), cfg["text_cfg"])
        return int(cfg["embed_dim"]), sum(p.numel() for p in tower.parameters())

    def _load(self) -> None:
        import open_clip
        from open_clip.model import _build_text_tower

        tower = _build_text_tower(int(self.model_cfg["embed_dim"]), self.model_cfg["text_cfg"])
        state = _read_state(self.weights_path)
        text = {k[len("text.") :]: v for k, v in state.items() if k.startswith("text.")}
        if not text:
            raise ConfigError(
                f"open_clip_text: {self.weights_path} holds no 'text.*' keys (an open_clip "
                "model with a separate text tower, such as SigLIP2, has them)"
            )
        tower.load_state_dict(text, strict=True)
        self.tower = tower
        text_cfg = self.model_cfg["text_cfg"]
        self.tokenizer = open_clip.tokenizer.HFTokenizer(
            str(self.tokenizer_path),
            context_length=int(text_cfg.get("context_length", 77)),
            **dict(text_cfg.get("tokenizer_kwargs", {})),
        )

    def _embed(self, texts: list[str], device: torch.device) -> torch.Tensor:
        tower = self.tower.to(device)
        ids = self.tokenizer(texts).to(device)  # [T, L]
        return tower(ids)  # [T, D]


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict: ``.safetensors``, else ``torch.load(weights_only=True)``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ConfigError(f"open_clip_text: {path} holds a {type(state).__name__}, not weights")
    return dict(state.get("state_dict", state))


@hookimpl
def register_text_encoders(register) -> None:
    register("open_clip_text", OpenCLIPTextTower)
