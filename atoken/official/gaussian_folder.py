"""The official Gaussian decoder (``3d_decode_gs.pt``) as a converted folder with its licence
notice (what ``atoken convert official 3d_decode_gs.pt OUT_DIR`` writes):

    OUT_DIR/gaussian_decoder.json          {"format": "atoken-gaussian-decoder", "version": 1,
                                            "source": ..., "options": {SwinGaussianDecoder args}}
    OUT_DIR/gaussian_decoder.safetensors   the weights under atoken's keys
    OUT_DIR/NOTICE.md                      the model licence notice

``load_gaussian_decoder(OUT_DIR)`` reads it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from atoken.core.errors import OutputFolderError
from atoken.official.gaussian_decoder import (
    FOLDER_CONFIG,
    FOLDER_FORMAT,
    FOLDER_WEIGHTS,
    gaussian_decoder_config,
    load_gaussian_decoder,
)
from atoken.official.notice import ATTRIBUTION, NOTICE_NAME

__all__ = [
    "GAUSSIAN_DECODER",
    "OTHER",
    "TOKENIZER",
    "convert_gaussian_decoder",
    "is_gaussian_decoder_checkpoint",
    "official_checkpoint_kind",
    "unknown_checkpoint_message",
]

#: The kinds of official checkpoints :func:`official_checkpoint_kind` tells apart.
GAUSSIAN_DECODER, TOKENIZER, OTHER = "gaussian_decoder", "tokenizer", "other"

#: Keys only the Gaussian decoder's checkpoint has (the tokenizers' start with encoder/decoder).
_MARKERS = ("input_layer.weight", "out_layer.weight", "offset_perturbation")


def _keys(path: Path) -> set[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise TypeError("not a flat state dict")  # wrapped or other: the converter names it
    return set(state)


def is_gaussian_decoder_checkpoint(path: str | os.PathLike) -> bool:
    """Whether the file ``path`` holds the official Gaussian decoder's state dict (its keys
    are read, memory-mapped; False for anything unreadable: the converter then names the
    problem)."""
    return official_checkpoint_kind(path) == GAUSSIAN_DECODER


def official_checkpoint_kind(path: str | os.PathLike) -> str | None:
    """What the file ``path`` holds, by its keys (read memory-mapped): ``"gaussian_decoder"``
    (``3d_decode_gs.pt``), ``"tokenizer"`` (an AToken checkpoint: ``encoder.*`` and
    ``decoder.*`` keys), ``"other"``, or None when it cannot be read as a state dict (the
    converter then names the problem)."""
    try:
        keys = _keys(Path(path))
    except Exception:  # any unreadable file: not recognised here
        return None
    if all(k in keys for k in _MARKERS):
        return GAUSSIAN_DECODER
    parts = {k.split(".", 1)[0] for k in keys}
    return TOKENIZER if {"encoder", "decoder"} <= parts else OTHER


def unknown_checkpoint_message(path: str | os.PathLike) -> str:
    """Why ``path`` (of kind ``"other"``) is neither official checkpoint: what it lacks."""
    keys = sorted(_keys(Path(path)))
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return (
        f"{path}: neither an official AToken tokenizer checkpoint (encoder.* and decoder.* "
        f"keys) nor the 3D Gaussian decoder ({', '.join(_MARKERS)}); its {len(keys)} keys: "
        f"{shown or 'none'}"
    )


def _check_folder(folder: Path, overwrite: bool) -> None:
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputFolderError("is a file, not a folder", folder=str(folder))
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return
    ours = (folder / FOLDER_CONFIG).is_file()
    if ours and overwrite:
        return
    if ours:
        raise OutputFolderError(
            "holds a converted Gaussian decoder; pass --overwrite (overwrite=True) to replace "
            "it, or choose a new folder",
            folder=str(folder),
        )
    raise OutputFolderError(
        f"holds {len(entries)} entries ({', '.join(entries[:4])}) that are not a converted "
        "Gaussian decoder: choose a new or an empty folder",
        folder=str(folder),
    )


def _notice(source: str) -> str:
    return f"""# Licence notice: converted Apple AToken weights

{ATTRIBUTION}

These weights (`{FOLDER_WEIGHTS}`, the 3D Gaussian decoder) are a **Model Derivative** of the
Apple Machine Learning Research Model `{source}` (AToken, apple/ml-atoken). Changes: the
state-dict keys were renamed for the atoken library and the training-only modules
(`lpips_loss.*`, `ssim_loss.*`, `get_psnr.*`), if any, left out; no value was changed. A
fine-tune of these weights is a further derivative: record what you changed below.

Terms: see the full agreement, `MODEL-LICENSE` in apple/ml-atoken, which must accompany any
redistribution (research purposes only; keep the attribution notice; identify derivatives).

## Modifications after conversion

(none)
"""


def convert_gaussian_decoder(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Any = None,
    *,
    licence_file: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert ``3d_decode_gs.pt`` (and its YAML ``config``, see
    :func:`~atoken.official.gaussian_decoder.load_gaussian_decoder`) into ``out_dir``.

    ``out_dir`` must be new or empty, or, with ``overwrite``, a converted Gaussian decoder
    folder (its files are replaced, others kept); checked before the checkpoint is read.

    Raises:
        OutputFolderError: ``out_dir`` holds other files, or a converted decoder without
            ``overwrite``.
        CheckpointError, ConfigError, StateDictMismatchError: as ``load_gaussian_decoder``.
    """
    import shutil

    from safetensors.torch import save_file

    folder = Path(out_dir)
    _check_folder(folder, overwrite)
    decoder = load_gaussian_decoder(checkpoint, config)
    _check_folder(folder, overwrite)  # nothing appeared meanwhile
    folder.mkdir(parents=True, exist_ok=True)
    options = gaussian_decoder_config(decoder)
    doc = {
        "format": FOLDER_FORMAT,
        "version": 1,
        "source": Path(checkpoint).name,
        "options": options,
    }
    state = {k: v.contiguous() for k, v in decoder.state_dict().items()}
    save_file(state, str(folder / FOLDER_WEIGHTS))
    (folder / FOLDER_CONFIG).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (folder / NOTICE_NAME).write_text(_notice(Path(checkpoint).name), encoding="utf-8")
    if licence_file is not None:
        shutil.copyfile(licence_file, folder / "MODEL-LICENSE")
    return folder
