"""The ``open_clip`` text encoder: the text tower of any open_clip model, from local files.

Shapes: T texts -> token ids ``[T, L]`` (L the model's context length) -> ``[T, D]`` (D the
model's ``embed_dim``: 768 for ViT-B-16-SigLIP2).

Weights come from ``pretrained``, a local open_clip checkpoint for ``model_name`` (pretrained
tags such as ``"webli"`` would download and are refused), or from ``model``, an open_clip model
instance. The tokenizer is ``tokenizer`` (a callable, or the folder of a Hugging Face tokenizer
such as SigLIP2's Gemma one), else ``open_clip.get_tokenizer(model_name)``, which works offline
for the CLIP BPE tokenizer and needs the files in the local Hugging Face cache otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.losses.clip import open_clip_parameters
from atoken.losses.weight_files import explicit_file
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.text_encoders._base import TextEncoder

__all__ = ["OpenCLIPTextEncoder"]


def _how(model_name: str) -> str:
    return (
        f"Nothing is downloaded: pass pretrained='/path/to/open_clip_model.safetensors' (the "
        f"local open_clip checkpoint of {model_name!r}, e.g. from the Hugging Face cache of "
        "timm/ViT-B-16-SigLIP2) or model=<an open_clip model instance>; for a Hugging Face "
        "tokenizer (SigLIP2's Gemma) also pass tokenizer='/path/to/tokenizer/folder'."
    )


class OpenCLIPTextEncoder(TextEncoder):
    """An open_clip text tower (``model.encode_text``), frozen unless ``trainable``.

    Args:
        model_name: an open_clip model name (default ``"ViT-B-16-SigLIP2"``).
        pretrained: a local open_clip checkpoint file for ``model_name``.
        model: an open_clip model instance (used as is); overrides the two above.
        tokenizer: a callable ``texts -> [T, L]`` ids, or a local Hugging Face tokenizer folder.
        trainable: fine-tune the tower.

    Raises:
        WeightsNotFoundError: no ``model`` and no local ``pretrained`` file.
        ConfigError: an unknown model name or a model without ``encode_text``.
    """

    name = "open_clip"

    def __init__(
        self,
        *,
        model_name: str = "ViT-B-16-SigLIP2",
        pretrained: str | os.PathLike | None = None,
        model: nn.Module | None = None,
        tokenizer: Callable[..., torch.Tensor] | str | os.PathLike | None = None,
        trainable: bool = False,
    ) -> None:
        super().__init__(trainable=trainable)
        self.model_name = model_name
        self._tokenizer_arg = tokenizer
        self.tokenizer: Callable[..., torch.Tensor] | None = None
        if model is not None:
            if not callable(getattr(model, "encode_text", None)):
                raise ConfigError(
                    f"open_clip: model {type(model).__name__} has no encode_text method"
                )
            self.weights_path = None
            self.model = model
            self.dim = _model_dim(model)
            return
        import open_clip

        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ConfigError(
                f"open_clip: unknown model name {model_name!r} (see open_clip.list_models())"
            )
        self.dim = int(cfg["embed_dim"])
        if pretrained is None:
            raise WeightsNotFoundError(
                f"open_clip: no weights for {model_name!r}. {_how(model_name)}"
            )
        self.weights_path: Path | None = explicit_file(
            pretrained,
            f"open_clip: pretrained={os.fspath(pretrained)!r} is not a local file (pretrained "
            f"tags would download and are refused). {_how(model_name)}",
        )
        self.model = None

    @staticmethod
    def planned(
        *, model_name: str = "ViT-B-16-SigLIP2", model: nn.Module | None = None, **_: Any
    ) -> tuple[int, int]:
        """``(dim, parameters)`` of the tower without its weights (``atoken train --plan``):
        the whole open_clip model is held, counted on the meta device.

        Raises:
            ConfigError: an unknown model name.
        """
        if model is not None:
            return _model_dim(model), sum(p.numel() for p in model.parameters())
        count = open_clip_parameters(model_name)  # a ConfigError for an unknown name
        import open_clip

        return int(open_clip.get_model_config(model_name)["embed_dim"]), count

    def _load(self) -> None:
        if self.model is None:
            import open_clip

            self.model = open_clip.create_model(self.model_name, pretrained=str(self.weights_path))
        self.tokenizer = _tokenizer(self._tokenizer_arg, self.model_name, self.model)

    def _embed(self, texts: list[str], device: torch.device) -> torch.Tensor:
        model = self.model.to(device)
        ids = self.tokenizer(texts).to(device)  # [T, L]
        return model.encode_text(ids)  # [T, D]


def _model_dim(model: nn.Module) -> int:
    """The text embedding size of an open_clip model (from its projection or a dummy pass)."""
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor) and proj.ndim == 2:
        return int(proj.shape[1])
    text = getattr(model, "text", None)
    out = getattr(text, "output_dim", None)
    if isinstance(out, int):
        return out
    raise ConfigError(
        f"open_clip: cannot tell the text embedding size of {type(model).__name__}; give a model "
        "with text_projection or text.output_dim"
    )


def _tokenizer(arg: Any, model_name: str, model: nn.Module) -> Callable[..., torch.Tensor]:
    import open_clip

    if callable(arg):
        return arg
    context = getattr(model, "context_length", None) or 77
    if arg is not None:
        folder = Path(os.fspath(arg)).expanduser()
        if not folder.is_dir():
            raise WeightsNotFoundError(
                f"open_clip: tokenizer={os.fspath(arg)!r} is not a folder. Pass a local Hugging "
                "Face tokenizer folder or a callable."
            )
        # the model's own tokenizer options (SigLIP2: clean="canonicalize"), as get_tokenizer
        config = open_clip.get_model_config(model_name) or {}
        options = dict(config.get("text_cfg", {}).get("tokenizer_kwargs", {}))
        return open_clip.tokenizer.HFTokenizer(str(folder), context_length=context, **options)
    try:
        return open_clip.get_tokenizer(model_name, context_length=context)
    except Exception as exc:  # the hub is offline and the files are not cached
        raise WeightsNotFoundError(
            f"open_clip: the tokenizer of {model_name!r} is not on this machine ({exc}). "
            "Pass tokenizer='/path/to/tokenizer/folder' (a Hugging Face tokenizer) or "
            "tokenizer=open_clip.SimpleTokenizer() for the CLIP BPE tokenizer."
        ) from exc


@hookimpl
def register_text_encoders(register) -> None:
    register("open_clip", OpenCLIPTextEncoder)
