"""Files ``atoken reconstruct`` (and ``atoken eval``) reads and writes, for any modality,
through the modality's own hooks (:class:`atoken.core.sample_files.SampleFiles`):

    a file                -> the modality that ``reads`` it (its suffix is in
                             ``file_extensions``; the one ``--modality`` names, else the only
                             one of the tokenizer's that does); read with its ``load``: image
                             files [3, H, W], ``.npy`` arrays, a plugin's own formats, a folder
                             of views in the official 3D layout
    a file it ``streams``  -> never loaded whole: its ``reconstruct_stream`` writes the
                             outputs (video files: temporal tiles, GIF + MP4)
    a reconstruction      -> written with the modality's ``save`` (``.npy`` by default) beside
                             a side-by-side of its ``draw`` pictures, when it draws; a modality
                             whose ``save_reconstruction(path, sample, recon, out)`` hook
                             answers (meshes: 3DGS PLY and views) writes its own outputs

The quality column is PSNR in dB for pictures and clips, the Chamfer distance for a set-valued
sample (``set_valued``: the reconstruction may hold another number of rows), else the RMSE in
the modality's units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from atoken.core.errors import ConfigError, DataModalityError

__all__ = ["file_modality", "read_input", "save_reconstruction"]


def file_modality(path: str, modality: str | None, model: Any) -> str:
    """The tokenizer's modality that reads ``path``: ``modality`` when given (it must read
    it: ``Modality.reads``, by default the file's suffix), else the only one of ``model``'s
    that does.

    Raises:
        ConfigError: ``modality`` is not the tokenizer's, or no modality or several read the
            suffix (then ``--modality`` decides; the readers are named).
        DataModalityError: ``modality`` does not read files with that suffix.
    """
    known = tuple(model.config.modalities or ())
    if modality:
        if known and modality not in known:
            raise ConfigError(
                f"{path}: the tokenizer has no {modality!r} modality (it has {list(known)})"
            )
        reader = model.modality(modality)
        if not reader.reads(path):
            what = f"{list(reader.file_extensions)} files"
            if reader.folder_kind:
                what += f" and {reader.folder_kind}"
            raise DataModalityError(f"{path}: {modality!r} reads {what}, not {_kind(path)}")
        return modality
    readers = {n: model.modality(n).file_extensions for n in known}
    owners = [n for n in known if model.modality(n).reads(path)]
    if len(owners) == 1:
        return owners[0]
    what = _kind(path)
    if owners:
        raise ConfigError(f"{path}: {owners} all read {what}: pass --modality")
    raise ConfigError(f"{path}: no modality of this tokenizer reads {what} ({readers})")


def _kind(path: str) -> str:
    """What ``path`` is, for the messages: its suffix's files, a folder or a bare name."""
    if Path(path).is_dir():
        return "this folder"
    suffix = Path(path).suffix.lower()
    return f"{suffix!r} files" if suffix else "a path without a suffix"


def read_input(path: str, modality: str | None, model: Any) -> tuple[str, Any]:
    """``(modality, sample)`` of an input file (:func:`file_modality`; its ``load``);
    ``sample`` is None for a file its modality ``streams`` (a video file).

    Raises:
        ConfigError, DataModalityError: see :func:`file_modality`.
        ModalityInputError: a file its modality cannot read.
    """
    kind = file_modality(path, modality, model)
    reader = model.modality(kind)
    if reader.streams(path):
        return kind, None  # reconstructed piece by piece (reconstruct_stream): not loaded
    return kind, reader.load(path)


def save_reconstruction(
    path: str, kind: str, sample: Any, recon: Any, out: Path, model: Any
) -> tuple[str, str]:
    """Write the reconstruction of the file ``path`` with its modality's hooks (``save``, and
    a side-by-side of ``draw`` pictures when it draws); returns the table's
    ``(size, quality)`` (see the module docstring)."""
    from atoken.viz import save_side_by_side

    reader = model.modality(kind)
    own = reader.save_reconstruction(path, sample, recon, out)
    if own is not None:  # a modality that writes its own outputs (meshes)
        return own
    stem = Path(path).stem
    if not reader.set_valued and isinstance(sample, torch.Tensor):
        recon = recon.detach().float().cpu().reshape(sample.shape)  # a grid: the input's shape
    if reader.sample_kind == "picture":
        recon = recon.clamp(0, 1)
    reader.save(recon, out / f"{stem}_recon")
    seen, shown = reader.draw(sample), reader.draw(recon, sample)
    if seen is not None and shown is not None:
        save_side_by_side([seen], [shown], out / f"{stem}_side_by_side.png", labels=[stem])
    return _size(sample), _quality(reader, sample, recon)


def _size(sample: Any) -> str:
    if isinstance(sample, torch.Tensor):
        return "x".join(map(str, sample.shape[-2:] if sample.ndim >= 2 else sample.shape))
    return type(sample).__name__


def _quality(reader: Any, sample: torch.Tensor, recon: torch.Tensor) -> str:
    if reader.set_valued:
        from atoken.losses.sets import chamfer_distance

        return f"Chamfer {float(chamfer_distance(recon.float(), sample.float())):.4g}"
    mse = float(((recon.float() - sample.float()) ** 2).mean())
    if reader.sample_kind in ("picture", "clip"):
        return f"PSNR {10 * math.log10(1 / max(mse, 1e-12)):.2f} dB"
    return f"RMSE {math.sqrt(mse):.4g}"
