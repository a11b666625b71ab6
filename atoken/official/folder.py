"""An official AToken checkpoint as a ``save_pretrained`` folder with its licence notice.

    convert_official("atoken-soc.pt", "converted/soc")  # config.json, model.safetensors, NOTICE.md

(the ``atoken convert official`` command); load the folder with ``Tokenizer.from_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from atoken.official.convert import from_official
from atoken.official.notice import write_notice
from atoken.pretrained import check_output_folder
from atoken.tokenizer import Tokenizer

__all__ = ["convert_official"]


def convert_official(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Any = None,
    *,
    licence_file: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Convert an official checkpoint into a ``save_pretrained`` folder (``config.json``,
    ``model.safetensors``) with the model licence notice beside the weights (``NOTICE.md``).

    Arguments as :func:`from_official`; ``licence_file``: the user's copy of the official
    ``MODEL-LICENSE``, copied beside the weights. Returns ``out_dir``; load the folder with
    ``Tokenizer.from_pretrained(out_dir)``.

    ``out_dir`` must be a new or empty folder, or, with ``overwrite``, a tokenizer folder
    (:func:`atoken.pretrained.check_output_folder`); a folder of other files is never
    written into. It is checked before the checkpoint is read.

    Raises:
        OutputFolderError: ``out_dir`` holds files atoken did not write, or a tokenizer
            without ``overwrite``.

    Warns:
        NonFiniteWeightsWarning: the checkpoint holds NaN or infinite values (named).
    """
    check_output_folder(out_dir, overwrite=overwrite)
    model = from_official(Tokenizer, checkpoint, config, **options)
    check_output_folder(out_dir, overwrite=overwrite)  # nothing appeared meanwhile
    folder = model.save_pretrained(out_dir)
    source = Path(checkpoint).name
    gaussian = options.get("gaussian_decoder")
    if isinstance(gaussian, (str, os.PathLike)):  # its weights are in the folder too
        source = f"{source}` and `{Path(gaussian).name}"
    write_notice(folder, source=source, config=model.config, licence_file=licence_file)
    return folder
