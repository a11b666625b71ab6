"""What a modality's samples are outside the model: files, pictures and their kind.

Every :class:`~atoken.core.modality.Modality` inherits these hooks; ``atoken reconstruct``,
``atoken encode`` and ``atoken eval`` read and write samples through them, and the generic
task's previews (and so the HTML report) draw them:

    modality.reads("x.npy")                      whether it reads that file (by its suffix)
    sample = modality.load("x.npy")              one sample from a file
    files = modality.save(sample, out / "x")     the files written (the suffix is the hook's)
    picture = modality.draw(sample, reference)   [3, H, W] in [0, 1], or None: nothing to draw

``atoken encode`` asks every registered modality class whether a path is a store of its own
format (a media store of any modality is read without it):

    samples = ModalityClass.open_store("data/scans")    samples with names, or None: not one

``atoken reconstruct`` asks three more, for files a modality handles its own way (by default
neither: the file is loaded whole, reconstructed, then ``save``d and ``draw``n):

    modality.streams("clip.mp4")                 True: never loaded whole, see next line
    size, quality = modality.reconstruct_stream(tokenizer, "clip.mp4", out, max_frames=None)
    modality.save_reconstruction(path, sample, recon, out)   (size, quality), or None: default

The defaults handle tensors in ``.npy`` files (read with ``allow_pickle=False``: a file never
runs code) and picture-like tensors. A modality overrides what its samples need: its
``file_extensions`` (the first is what :meth:`SampleFiles.save` writes), ``load``/``save`` for
its own formats, ``draw`` for a set of points or Gaussians.

``sample_kind`` says what a sample is, for what consumes samples without knowing the modality
(a metric declares the kinds it accepts, ``accepts``; a run that gives a metric samples of
another kind is a ``ConfigError`` when it is built):

    "picture"   [3, H, W] in [0, 1]            "clip"    [3, T, H, W] in [0, 1]
    "set"       [n, d] rows in no order         "array"   any other tensor (the default)
    "asset"     what the modality reads itself (a mesh file's path)

A ``"set"`` modality is ``set_valued``: its decoded sample may hold another number of rows
than the input, and is compared as a set (``chamfer``, ``emd``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from atoken.core.errors import ModalityInputError

__all__ = ["SAMPLE_KINDS", "SampleFiles", "Written", "visible"]

#: What ``atoken reconstruct`` prints of one input: ``(size, quality)``, e.g.
#: ``("8x64x64", "PSNR 31.20 dB")``.
Written = tuple[str, str]

#: The kinds of samples (see the module docstring).
SAMPLE_KINDS: tuple[str, ...] = ("picture", "clip", "set", "array", "asset")


def visible(x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor | None:
    """A tensor as a picture ``[3, H, W]`` in [0, 1]: ``[3, H, W]`` as it is (clamped); a
    one-channel map ``[H, W]`` or ``[1, H, W]`` scaled to [0, 1] by the range of
    ``reference`` (default: its own) and shown grey; None for other layouts."""
    x = x.detach().float().cpu()
    if x.ndim == 3 and x.shape[0] == 3:
        return x.clamp(0, 1)
    if x.ndim == 2 or (x.ndim == 3 and x.shape[0] == 1):
        ref = x if reference is None else reference.detach().float().cpu()
        lo, hi = float(ref.min()), float(ref.max())
        grey = ((x.reshape(1, *x.shape[-2:]) - lo) / max(hi - lo, 1e-8)).clamp(0, 1)  # [1, H, W]
        return grey.expand(3, -1, -1)
    return None


class SampleFiles:
    """The file and picture hooks of a modality (its base class's; see the module)."""

    name: ClassVar[str]
    #: Suffixes (lower case, with the dot) of the files :meth:`load` reads.
    file_extensions: ClassVar[tuple[str, ...]] = (".npy",)
    #: What a sample is: one of :data:`SAMPLE_KINDS`.
    sample_kind: ClassVar[str] = "array"
    #: The folders :meth:`reads` takes as one sample, in words for messages ("": none).
    folder_kind: ClassVar[str] = ""

    def reads(self, path: str | Path) -> bool:
        """Whether :meth:`load` reads ``path``: by default, its suffix is one of
        ``file_extensions`` (a modality may recognise more, e.g. a folder in a layout of its
        own)."""
        return Path(path).suffix.lower() in self.file_extensions

    def load(self, path: str | Path) -> Any:
        """One sample from the file ``path``: by default a ``.npy`` array as a float32
        tensor, never unpickled.

        Raises:
            ModalityInputError: a suffix this modality does not read, or a file that cannot
                be read (both named).
        """
        path = Path(path)
        if path.suffix.lower() != ".npy":
            raise ModalityInputError(
                f"{self.name}: cannot read {str(path)!r}: it reads {list(self.file_extensions)}"
            )
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModalityInputError(f"{path}: not a readable .npy array ({exc})") from exc
        return torch.from_numpy(np.ascontiguousarray(array)).float()

    def save(self, sample: Any, stem: str | Path) -> list[Path]:
        """Write ``sample`` as ``stem`` + this modality's suffix (by default a ``.npy``
        array); returns the files written."""
        path = Path(stem).with_suffix(".npy")
        np.save(path, torch.as_tensor(sample).detach().float().cpu().numpy())
        return [path]

    def draw(self, sample: Any, reference: Any = None) -> torch.Tensor | None:
        """A picture ``[3, H, W]`` in [0, 1] of ``sample`` for previews and reports (a
        reconstruction is drawn with its original as ``reference``, e.g. to share a value
        range), or None when the modality has nothing to draw: by default :func:`visible`
        of a tensor."""
        if not isinstance(sample, torch.Tensor):
            return None
        return visible(sample, reference if isinstance(reference, torch.Tensor) else None)

    def streams(self, path: str | Path) -> bool:
        """Whether ``atoken reconstruct`` hands ``path`` (a path this modality :meth:`reads`)
        to :meth:`reconstruct_stream` instead of loading it whole (a video file: decoded and
        reconstructed in temporal tiles). By default False."""
        return False

    def reconstruct_stream(
        self, tokenizer: Any, path: str | Path, out: Path, *, max_frames: int | None = None
    ) -> Written:
        """Reconstruct the file ``path`` with ``tokenizer`` piece by piece, write the outputs
        in the folder ``out`` (named after the file's stem) and return the table's
        ``(size, quality)``; ``max_frames`` keeps only the first frames of a clip. Called only
        for the paths :meth:`streams` claims.

        Raises:
            NotImplementedError: the modality streams nothing (the default).
        """
        raise NotImplementedError(f"{self.name}: streams no file; {path} is loaded whole")

    def save_reconstruction(self, path: str, sample: Any, recon: Any, out: Path) -> Written | None:
        """Write the reconstruction ``recon`` of the file ``path`` (loaded as ``sample``) in
        the folder ``out`` this modality's own way and return the table's ``(size,
        quality)``, or None (the default) for the generic outputs: :meth:`save` of ``recon``
        beside a side-by-side of :meth:`draw` pictures."""
        return None

    @classmethod
    def open_store(cls, path: str | Path) -> Sequence[Any] | None:
        """The samples of a store in this modality's own format at ``path``, as ``atoken
        encode`` reads them: a sequence of raw samples with ``names`` (a tuple, one per
        sample) and ``modality`` (the registered name). None (the default): ``path`` is not
        one; a media store of any modality (:class:`atoken.data.ZarrSamples`) needs no hook.
        A class method: it is asked before any tokenizer is involved, so a store of a
        modality the tokenizer lacks is recognised and refused by name, never read as
        something else."""
        return None
