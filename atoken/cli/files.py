"""Files ``atoken reconstruct`` reads and writes, for any modality.

    image files (.png, .jpg, ...)  -> image  [3, H, W] in [0, 1]; written back as PNG
    video files (.mp4, ...)        -> video  streamed in temporal tiles (GIF + MP4 written)
    .npy arrays                    -> the ``--modality`` given (e.g. depth ``[H, W]``);
                                      written back as .npy, with a PNG when it is picturable
    a modality's own files         -> that modality, when its class lists the suffix in
                                      ``file_extensions`` (meshes: .obj, .ply, .glb, ...); the
                                      path is its sample, and its ``save_reconstruction(path,
                                      sample, recon, out) -> (size, error)`` writes the outputs

The error column is PSNR in dB for images and videos, the RMSE in the modality's units for
other samples.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atoken.core.errors import ConfigError, DataModalityError, ModalityInputError

__all__ = ["read_input", "save_reconstruction"]


def read_input(path: str, modality: str | None, model: Any) -> tuple[str, torch.Tensor | None]:
    """``(modality, sample)`` of an input file (``sample`` None for a video: it is streamed).

    Raises:
        ConfigError: a .npy without ``modality``, or a modality the tokenizer lacks.
        DataModalityError: ``modality`` contradicts the file (an image file as depth).
        ModalityInputError: a file that cannot be read.
    """
    from atoken.data.pixels import image_size, to_image_tensor
    from atoken.data.video_io import VIDEO_EXTENSIONS

    suffix = Path(path).suffix.lower()
    kind = "video" if suffix in VIDEO_EXTENSIONS else "image"
    owner = _file_owner(suffix, modality, model)
    if owner is not None:
        return owner, path
    if suffix == ".npy":
        if not modality:
            raise ConfigError(f"{path}: a .npy array needs --modality (e.g. --modality depth)")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModalityInputError(f"{path}: not a readable .npy array ({exc})") from exc
        sample: torch.Tensor | None = torch.from_numpy(np.ascontiguousarray(array)).float()
        kind = modality
    elif modality and modality != kind:
        raise DataModalityError(
            f"{path} is a{'' if kind == 'video' else 'n'} {kind} file, not {modality!r}; "
            f"save {modality} samples as .npy arrays"
        )
    else:
        sample = None
    known = tuple(model.config.modalities or ())
    if known and kind not in known:
        raise ConfigError(f"{path}: the tokenizer has no {kind!r} modality (it has {list(known)})")
    if kind == "image" and sample is None:
        check = getattr(model.modality(kind), "check_size", None)
        if check is not None:  # the token guard reads the header: nothing decoded before it
            check(*image_size(path))
        sample = to_image_tensor(path)
    return kind, sample


def _file_owner(suffix: str, modality: str | None, model: Any) -> str | None:
    """The tokenizer's modality that reads files with ``suffix`` itself (``file_extensions``):
    ``modality`` when given and it does, else the only one that does; None for none."""
    known = tuple(model.config.modalities or ())
    names = [modality] if modality else list(known)
    owners = [
        n
        for n in names
        if (not known or n in known) and suffix in getattr(model.modality(n), "file_extensions", ())
    ]
    return owners[0] if len(owners) == 1 else None


def save_reconstruction(
    path: str, kind: str, sample: Any, recon: Any, out: Path, model: Any = None
) -> tuple[str, str]:
    """Write the reconstruction (and a side-by-side picture when there is one); returns the
    table's ``(size, quality)``: PSNR for pictures, RMSE for value maps."""
    from atoken.viz import save_side_by_side, to_pil, to_visible

    own = getattr(model.modality(kind), "save_reconstruction", None) if model else None
    if own is not None and isinstance(sample, str):
        return own(path, sample, recon, out)

    stem = Path(path).stem
    size = "x".join(map(str, sample.shape[-2:]))
    if Path(path).suffix.lower() != ".npy":  # an image file
        recon = recon.clamp(0, 1)
        to_pil(recon).save(out / f"{stem}_recon.png")
        save_side_by_side([sample], [recon], out / f"{stem}_side_by_side.png", labels=[stem])
        mse = float(((recon - sample) ** 2).mean())
        return size, f"PSNR {10 * math.log10(1 / max(mse, 1e-12)):.2f} dB"
    recon = recon.detach().float().cpu().reshape(sample.shape)
    np.save(out / f"{stem}_recon.npy", recon.numpy())
    seen, shown = to_visible(sample), to_visible(recon, sample)
    if seen is not None and shown is not None:
        save_side_by_side([seen], [shown], out / f"{stem}_side_by_side.png", labels=[stem])
    rmse = float(((recon - sample) ** 2).mean().sqrt())
    return size, f"RMSE {rmse:.4g}"
