"""The licence notice written beside converted official weights (``NOTICE.md``).

The official AToken weights are under the Apple Machine Learning Research Model License
Agreement (``MODEL-LICENSE`` in apple/ml-atoken): research and non-commercial use only; model
derivatives (a conversion, a fine-tune) are limited to research too; whoever redistributes the
weights or a derivative must give the agreement to the recipient, keep the attribution notice
below, and identify derivatives as such with their changes. atoken downloads no weights and
bundles none; this notice travels with every folder the converter writes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["ATTRIBUTION", "NOTICE_NAME", "notice_text", "write_notice"]

NOTICE_NAME = "NOTICE.md"

#: The attribution notice the agreement requires on every redistribution.
ATTRIBUTION = (
    "Apple Machine Learning Research Model is licensed under the Apple Machine Learning "
    "Research Model License Agreement."
)


def notice_text(*, source: str, config: Any = None) -> str:
    """The notice for weights converted from the official checkpoint ``source``."""
    name = getattr(config, "name", None) or "converted"
    return f"""# Licence notice: converted Apple AToken weights

{ATTRIBUTION}

These weights (`model.safetensors`, tokenizer `{name}`) are a **Model Derivative** of the
Apple Machine Learning Research Model `{source}` (AToken, apple/ml-atoken). Changes: the
state-dict keys were renamed and two tensors reshaped for the atoken library (the position
tables `[G*G, C]` -> `[G, G, C]`, the MAP probe `[C]` -> `[1, C]`); no value was changed. A
fine-tune of these weights is a further derivative: record what you changed below.

Terms (see the full agreement, `MODEL-LICENSE` in apple/ml-atoken, which must accompany any
redistribution):

- use, copies, modifications and derivatives are for **Research Purposes only**
  (non-commercial scientific research; no commercial product or service);
- whoever redistributes these weights or a derivative must give the recipient a copy of the
  agreement, keep the attribution notice above, and identify derivatives as such, with their
  modifications;
- Apple's names and marks may not be used to endorse or promote derivatives;
- the weights are provided "AS IS", without warranty.

## Modifications after conversion

(none)
"""


def write_notice(
    folder: str | os.PathLike,
    *,
    source: str,
    config: Any = None,
    licence_file: str | os.PathLike | None = None,
) -> Path:
    """Write ``NOTICE.md`` into ``folder`` (and copy ``licence_file``, the user's copy of the
    official ``MODEL-LICENSE``, beside it); returns the notice's path."""
    folder = Path(folder)
    path = folder / NOTICE_NAME
    path.write_text(notice_text(source=source, config=config), encoding="utf-8")
    if licence_file is not None:
        shutil.copyfile(licence_file, folder / "MODEL-LICENSE")
    return path
