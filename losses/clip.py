"""The ``clip`` perceptual loss: distance between image embeddings of a frozen open_clip tower.

Shapes: images ``[B, 3, H, W]`` or lists of ``[3, H_i, W_i]`` in [0, 1] are resized to the
tower's input size S (224 for ViT-B/16) and batched to ``[B, 3, S, S]``, normalised with the
model's mean and std, and embedded to ``[B, D]``.

    cosine:  loss = mean_b (1 - cos(e_pred_b, e_target_b))
    l2:      loss = mean_b ||e_pred_b - e_target_b||²   (embeddings L2-normalised first when
             ``normalize_embeddings``, the default)

The tower is either a model instance (anything with ``encode_image``, e.g. an open_clip
``CLIP``) or built from ``model_name`` and ``pretrained``, which must be a local weights file:
open_clip's pretrained tags download, so they are refused. Without weights, construction raises
``WeightsNotFoundError``. Normalisation comes from ``mean``/``std`` if given, else from the
pretrained configurations open_clip lists for ``model_name`` (0.5 for SigLIP2, whose config
from ``pretrained=None`` wrongly shows the OpenAI values), else ``model.visual.preprocess_cfg``.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from atoken.core.errors import ConfigError, WeightsNotFoundError
from atoken.losses.image_batch import ImageBatch, check_size, image_pairs, resized_batch
from atoken.plugins.hookspecs import hookimpl

__all__ = ["CLIPLoss", "open_clip_parameters", "registry_normalisation"]

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def registry_normalisation(model_name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) shared by every pretrained tag open_clip lists for ``model_name``, else
    ``None``. Reads open_clip's tables only; nothing is downloaded."""
    import open_clip

    pairs = set()
    for tag in open_clip.list_pretrained_tags_by_model(model_name):
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        if cfg.get("mean") and cfg.get("std"):
            pairs.add((tuple(cfg["mean"]), tuple(cfg["std"])))
    return pairs.pop() if len(pairs) == 1 else None


@functools.lru_cache(maxsize=32)
def open_clip_parameters(model_name: str) -> int:
    """The parameters of the open_clip model ``model_name`` (both towers: what
    ``open_clip.create_model`` holds), counted on the meta device: nothing is read or allocated.

    Raises:
        ConfigError: ``model_name`` is not an open_clip model.
    """
    import open_clip

    if open_clip.get_model_config(model_name) is None:
        raise ConfigError(f"unknown open_clip model name {model_name!r} (open_clip.list_models())")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no weights were loaded: none are
    try:
        with torch.device("meta"):
            model = open_clip.create_model(model_name, device="meta")
    finally:
        logging.disable(previous)
    return sum(p.numel() for p in model.parameters())


def _weights_file(model_name: str, pretrained: str | os.PathLike | None) -> Path:
    if pretrained is None:
        raise WeightsNotFoundError(
            f"clip: no weights for {model_name!r}. Nothing is downloaded: pass "
            "pretrained='/path/to/open_clip_model.safetensors' (a local open_clip checkpoint, "
            "e.g. the file of timm/ViT-B-16-SigLIP2 from the Hugging Face cache) or "
            "model=<an open_clip model instance>."
        )
    path = Path(os.fspath(pretrained)).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"clip: pretrained={os.fspath(pretrained)!r} is not a local file. Pretrained tags "
            "(e.g. 'webli', 'openai') would download and are refused; pass the path of a local "
            "open_clip checkpoint or model=<an open_clip model instance>."
        )
    return path


class CLIPLoss(nn.Module):
    """Perceptual distance in a frozen CLIP/SigLIP image tower.

    Args:
        model: a model with ``encode_image`` (used as is, frozen); overrides the next two.
        model_name: an open_clip model name, default ``"ViT-B-16-SigLIP2"``.
        pretrained: a local open_clip checkpoint for ``model_name`` (required without
            ``model``).
        distance: ``"cosine"`` (default) or ``"l2"``.
        normalize_embeddings: L2-normalise the embeddings before an ``"l2"`` distance.
        mean, std: per-channel input normalisation; default from the model (see module doc).
        size: the resize side S (or ``(height, width)``); default the tower's input size.

    Raises:
        WeightsNotFoundError: neither ``model`` nor a local ``pretrained`` file is given.
    """

    name = "clip"
    inputs = "samples"  # what it consumes (docs/losses.md#inputs)

    def __init__(
        self,
        *,
        model: nn.Module | None = None,
        model_name: str = "ViT-B-16-SigLIP2",
        pretrained: str | os.PathLike | None = None,
        distance: Literal["cosine", "l2"] = "cosine",
        normalize_embeddings: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if distance not in ("cosine", "l2"):
            raise ConfigError(f"clip: distance must be 'cosine' or 'l2', got {distance!r}")
        if (mean is None) != (std is None) or any(
            v is not None and len(v) != 3 for v in (mean, std)
        ):
            raise ConfigError("clip: give both mean and std, three values each, or neither")
        if model is not None and not callable(getattr(model, "encode_image", None)):
            raise ConfigError(f"clip: model {type(model).__name__} has no encode_image method")
        self.distance, self.normalize_embeddings = distance, normalize_embeddings
        self.model_name = model_name
        self._size = check_size(size, who="clip")
        self._norm = (tuple(mean), tuple(std)) if mean is not None and std is not None else None
        self.weights_path = None if model is not None else _weights_file(model_name, pretrained)
        self.model: nn.Module | None = None
        if model is not None:
            self._adopt(model)

    @staticmethod
    def planned_parameters(
        *, model: nn.Module | None = None, model_name: str = "ViT-B-16-SigLIP2", **_: Any
    ) -> int:
        """The parameters of the frozen network the loss holds (the whole open_clip model),
        counted without its weights (``atoken train --plan``)."""
        if model is not None:
            return sum(p.numel() for p in model.parameters())
        return open_clip_parameters(model_name)

    def _adopt(self, model: nn.Module) -> None:
        self.model = model.requires_grad_(False).eval()
        visual = getattr(model, "visual", None)
        cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
        if self._norm is None:
            mean, std = cfg.get("mean", _OPENAI_MEAN), cfg.get("std", _OPENAI_STD)
            self._norm = (tuple(mean), tuple(std))
        if self._size is None:
            side = cfg.get("size") or getattr(visual, "image_size", None) or 224
            self._size = check_size(
                side if isinstance(side, int) else tuple(int(v) for v in side), who="clip"
            )
        self.register_buffer("mean", torch.tensor(self._norm[0]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self._norm[1]).view(1, 3, 1, 1), persistent=False)

    def network(self, device: torch.device | str = "cpu") -> nn.Module:
        """The frozen model, built from ``model_name`` and the local file on first call."""
        if self.model is None:
            import open_clip

            force = None
            if self._norm is None:
                found = registry_normalisation(self.model_name)
                force = {"mean": found[0], "std": found[1]} if found else None
            model = open_clip.create_model(
                self.model_name,
                pretrained=str(self.weights_path),
                pretrained_text=False,
                force_preprocess_cfg=force,
            )
            self._adopt(model)
        return self.to(device).model

    def train(self, mode: bool = True) -> CLIPLoss:
        super().train(mode)
        if self.model is not None:
            self.model.eval()
        return self

    @property
    def size(self) -> tuple[int, int] | None:
        """The input size ``(height, width)`` images are resized to (known once built)."""
        return self._size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` in [0, 1] -> embeddings ``[B, D]`` (float32)."""
        model = self.network(images.device)
        return model.encode_image((images - self.mean) / self.std).float()

    def forward(
        self, prediction: ImageBatch, target: ImageBatch, context: Mapping[str, Any]
    ) -> torch.Tensor:
        preds, targets = image_pairs(prediction, target, who="clip")
        self.network(preds[0].device)
        x = resized_batch(preds, self._size, who="clip")  # [B, 3, S, S]
        y = resized_batch(targets, self._size, who="clip")  # [B, 3, S, S]
        e_pred = self.embed(x)  # [B, D]
        with torch.no_grad():
            e_target = self.embed(y)  # [B, D]
        if self.distance == "cosine":
            return (1.0 - F.cosine_similarity(e_pred, e_target, dim=-1)).mean()
        if self.normalize_embeddings:
            e_pred, e_target = F.normalize(e_pred, dim=-1), F.normalize(e_target, dim=-1)
        return (e_pred - e_target).square().sum(dim=-1).mean()


@hookimpl
def register_losses(register) -> None:
    register("clip", CLIPLoss)
