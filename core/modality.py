"""The modality contract: how raw samples become sparse 4D tokens and back.

A modality turns one raw sample into ``values [n, d]`` (d = ``value_dim``, the flattened patch),
``coords int32 [n, 4]`` (t, x, y, z) and a metadata dict that holds whatever ``unpatchify``
needs to invert it exactly (original size, grid shape, ...). Subclass :class:`Modality` and
register the class through the ``register_modalities`` hook.

What the modality owns (the tokenizer hard-codes none of it):

* ``value_dim`` and ``content_dim``: a token holds ``value_dim`` values whose leading
  ``content_dim`` are content; the rest is zero padding (an image fills temporal slot 0 of a
  4-slot tubelet) that the model neither normalises nor predicts.
* its value normalisation: ``normalize``/``denormalize`` (by default a per-channel
  ``(v - value_mean) / value_std`` over the content values, identity when ``value_mean`` is
  None);
* ``uses_pos_table``: whether the learned 2D position table applies (grids of rows and columns:
  images and video yes; voxels and point sets no; RoPE applies to every modality);
* ``default_head``: the registered head that decodes it when the config names none.

The tokenizer builds a modality with :func:`build_modality`: it passes the encoder arguments of
:data:`ENCODER_ARGUMENTS` that the factory accepts, then the user's ``modality_params``. A
modality gets its own input projection and its own head instance (see
:class:`atoken.core.projection.ModalityProjections`) unless it declares
``shared_pixel_path`` (RGB patches of the encoder's patch dimension: image, video, mesh), so a
one-channel or 12-band modality plugs in without padding tricks, whatever its ``value_dim``.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from atoken.core.errors import ConfigError, ModalityInputError
from atoken.core.latent import SparseLatent
from atoken.core.sample_files import SAMPLE_KINDS, SampleFiles

if TYPE_CHECKING:
    from atoken.core.config import TokenizerConfig

__all__ = [
    "ENCODER_ARGUMENTS",
    "Modality",
    "accepted_arguments",
    "build_modality",
    "check_positive_ints",
    "encoder_arguments",
]

#: What the tokenizer passes to a modality factory, each only when the factory accepts it (by
#: name, or through ``**kwargs``):
#:
#: * ``patch_size``: the encoder's spatial patch p (16);
#: * ``temporal_patch``: its temporal patch pt (4);
#: * ``in_channels``: the channels c of its shared patch embedding (3);
#: * ``input_mean``, ``input_std``: the per-channel normalisation of [0, 1] pixel inputs that
#:   the shared patch embedding expects (SigLIP2: 0.5, 0.5).
ENCODER_ARGUMENTS: tuple[str, ...] = (
    "patch_size",
    "temporal_patch",
    "in_channels",
    "input_mean",
    "input_std",
)


def check_positive_ints(owner: str, **values: Any) -> None:
    """Raise :class:`ModalityInputError` naming the first of ``values`` that is not an int >= 1
    (a modality's constructor arguments: ``check_positive_ints("image", patch_size=16)``)."""
    for label, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ModalityInputError(f"{owner}: {label} must be a positive int, got {value!r}")


def check_decode_grid(
    owner: str,
    size: Sequence[int],
    grid: Sequence[int],
    patch: Sequence[int],
    *,
    tokens: int,
    max_tokens: int,
) -> None:
    """Check a latent's meta before decoding: ``size`` positive, ``grid`` the patch grid of
    ``size`` (``ceil(size / patch)`` per axis), and no more cells than
    ``max(max_tokens, tokens)`` (a tampered grid would otherwise allocate its whole volume).

    Raises:
        ModalityInputError: naming ``owner`` and the meta entry that is wrong.
    """
    size, grid = tuple(int(v) for v in size), tuple(int(v) for v in grid)
    if any(v < 1 for v in size):
        raise ModalityInputError(f"{owner}: meta size {list(size)} must be positive")
    want = tuple(-(-s // int(p)) for s, p in zip(size, patch, strict=True))
    if want != grid:
        raise ModalityInputError(
            f"{owner}: meta size {list(size)} needs the token grid {list(want)} (patch "
            f"{list(patch)}), but the meta's grid is {list(grid)}: tampered or mixed-up meta"
        )
    cells = math.prod(grid)
    if cells > max(int(max_tokens), int(tokens)):
        raise ModalityInputError(
            f"{owner}: meta grid {list(grid)} has {cells} cells, above max_tokens={max_tokens} "
            f"and the latent's {tokens} tokens"
        )


def accepted_arguments(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """``(keyword names, takes **kwargs)`` of a factory (a class's ``__init__`` or a function)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: pass everything
        return set(), True
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def encoder_arguments(config: TokenizerConfig) -> dict[str, Any]:
    """The values of :data:`ENCODER_ARGUMENTS` for a tokenizer config."""
    enc = config.encoder
    return {
        "patch_size": enc.patch_size,
        "temporal_patch": enc.temporal_patch,
        "in_channels": enc.in_channels,
        "input_mean": tuple(config.input_mean),
        "input_std": tuple(config.input_std),
    }


def build_modality(
    name: str,
    factory: Callable[..., Any],
    config: TokenizerConfig,
    params: Mapping[str, Any] | None = None,
    *,
    plugin: str = "unknown",
) -> Modality:
    """Build the registered modality ``name`` for a tokenizer ``config``, as the tokenizer does.

    The factory gets the :data:`ENCODER_ARGUMENTS` it accepts, then ``params`` (the config's
    ``modality_params[name]``), which take precedence.

    Raises:
        ConfigError: a parameter the factory does not take, a factory that fails with a
            ``TypeError``, or a result that is not a :class:`Modality` with a positive
            ``value_dim`` and a known ``sample_kind`` (``"set"`` exactly when
            ``set_valued``); each names the modality and its plugin.
    """
    params = dict(params or {})
    names, var_kw = accepted_arguments(factory)
    unknown = sorted(k for k in params if k not in names and not var_kw)
    if unknown:
        raise ConfigError(
            f"modality {name!r} (plugin {plugin!r}) does not take {unknown} in modality_params; "
            f"it takes {sorted(names)}"
        )
    kwargs = {k: v for k, v in encoder_arguments(config).items() if var_kw or k in names}
    kwargs.update(params)
    try:
        modality = factory(**kwargs)
    except (TypeError, ModalityInputError) as exc:  # its arguments, rejected
        raise ConfigError(
            f"modality {name!r} (plugin {plugin!r}) could not be built with {sorted(kwargs)}: {exc}"
        ) from exc
    if not isinstance(modality, Modality):
        raise ConfigError(
            f"modality {name!r} (plugin {plugin!r}): the factory returned "
            f"{type(modality).__name__}, not an atoken.Modality"
        )
    dim = getattr(modality, "value_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(
            f"modality {name!r} (plugin {plugin!r}): value_dim must be a positive int, got {dim!r}"
        )
    content = modality.content_dim
    if isinstance(content, bool) or not isinstance(content, int) or not 0 < content <= dim:
        raise ConfigError(
            f"modality {name!r} (plugin {plugin!r}): content_dim must be an int in [1, {dim}], "
            f"got {content!r}"
        )
    _check_stats(modality, f"modality {name!r} (plugin {plugin!r})")
    if modality.sample_kind not in SAMPLE_KINDS or (modality.sample_kind == "set") != bool(
        modality.set_valued
    ):
        raise ConfigError(
            f"modality {name!r} (plugin {plugin!r}): sample_kind must be one of {SAMPLE_KINDS} "
            f"('set' exactly when set_valued), got {modality.sample_kind!r} with set_valued="
            f"{modality.set_valued!r}"
        )
    return modality


def _check_stats(modality: Modality, owner: str) -> None:
    """``value_mean``/``value_std``: both None, or equal-length finite numbers whose channel
    count divides ``content_dim``, with every std > 0."""
    mean, std = modality.value_mean, modality.value_std
    if mean is None and std is None:
        return
    try:
        mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{owner}: value_mean/value_std must be numbers, got {mean!r}, {std!r}"
        ) from exc
    if not mean_t or len(mean_t) != len(std_t) or modality.content_dim % len(mean_t):
        raise ConfigError(
            f"{owner}: value_mean and value_std need one number per channel, equally many, "
            f"dividing content_dim={modality.content_dim}; got {mean!r} and {std!r}"
        )
    if not all(math.isfinite(v) for v in mean_t + std_t) or min(std_t) <= 0:
        raise ConfigError(
            f"{owner}: value_mean must be finite and value_std > 0, got {mean!r}, {std!r}"
        )


class Modality(SampleFiles, abc.ABC):
    """Base class of every modality (its file and picture hooks, ``load``/``save``/``draw``,
    ``file_extensions`` and ``sample_kind``: :class:`~atoken.core.sample_files.SampleFiles`).

    Class attributes a subclass sets:
        name: the registry name, stored in every latent made from it.
        layout: the grid layout of its coordinates, ``"thw"`` or ``"xyz"``
            (see :mod:`atoken.core.coords`).
        sample_ndim: the dimensions of one sample given as a tensor (images ``[C, H, W]``: 3,
            clips ``[C, T, H, W]``: 4); a tensor with one more dimension is a batch.
        uses_pos_table: add the encoder's learned 2D position table, read at each token's
            (row y, column x) (True for image-like grids; set False for voxels and point sets;
            an instance may set its own, as the mesh modality's official packing does).
        default_head: the registered head that decodes this modality when the tokenizer config
            names none for it (None: the config's ``head``, ``pixels`` by default).
        shared_pixel_path: read through the encoder's shared RGB patch embedding and decoded
            by the shared head (images and video: True). False (the default): the modality
            gets its own input projection and head, whatever its ``value_dim``.
        set_valued: a decoded sample may differ in size from the input (a set of points or
            Gaussians): reconstruction compares it as a set, not element by element.
        official_params: the constructor arguments (``modality_params``) under which it reads
            samples as the official AToken release does; ``Tokenizer.from_official`` applies
            them. Empty (the default) when its own way already is the official one.

    Instance attributes:
        value_dim: the size d of one token's values.
        value_mean, value_std: per-channel normalisation of the content values (channels are
            the last axis of a token's content, ``len(value_mean)`` of them); None: values are
            given to the model as they are. Override :meth:`normalize`/:meth:`denormalize` for
            anything else.
    """

    name: ClassVar[str]
    layout: ClassVar[str] = "thw"
    sample_ndim: ClassVar[int] = 3
    uses_pos_table: bool = True
    default_head: ClassVar[str | None] = None
    shared_pixel_path: ClassVar[bool] = False
    set_valued: ClassVar[bool] = False
    official_params: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    value_dim: int
    value_mean: tuple[float, ...] | None = None
    value_std: tuple[float, ...] | None = None

    @property
    def content_dim(self) -> int:
        """The leading values of each token that hold content (the rest is zero padding the
        model neither normalises nor predicts); ``value_dim`` unless a subclass says less."""
        return self.value_dim

    def _stats(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.value_mean is None:
            return None
        mean = torch.as_tensor(self.value_mean, dtype=torch.float32, device=values.device)  # [c]
        std = torch.as_tensor(self.value_std, dtype=torch.float32, device=values.device)  # [c]
        return mean, std

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        """Raw token values ``[n, value_dim]`` -> what the model reads (float32, same shape):
        ``(v - value_mean) / value_std`` per channel on the content values; padding as given."""
        values = values.float()
        stats = self._stats(values)
        if stats is None:
            return values
        mean, std = stats
        n, d = values.shape[0], self.content_dim
        content = values[:, :d].reshape(n, d // mean.numel(), mean.numel())  # [n, d / c, c]
        normed = ((content - mean) / std).reshape(n, d)  # [n, d]
        if d == values.shape[1]:
            return normed
        return torch.cat([normed, values[:, d:]], dim=1)  # [n, value_dim]

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`normalize` on predicted values ``[n, k]`` (k <= ``value_dim``: the
        leading values, at least the content) -> raw values of the same shape."""
        values = values.float()
        stats = self._stats(values)
        if stats is None:
            return values
        mean, std = stats
        n, d = values.shape[0], min(self.content_dim, values.shape[1])
        content = values[:, :d].reshape(n, d // mean.numel(), mean.numel())  # [n, d / c, c]
        raw = (content * std + mean).reshape(n, d)  # [n, d]
        if d == values.shape[1]:
            return raw
        return torch.cat([raw, values[:, d:]], dim=1)  # [n, k]

    def check_values(self, values: torch.Tensor) -> None:
        """Raise :class:`ModalityInputError` unless ``values`` is ``[n, value_dim]``."""
        if values.ndim != 2 or values.shape[1] != self.value_dim:
            raise ModalityInputError(
                f"{self.name}: values must be [n, {self.value_dim}], got {tuple(values.shape)}"
            )

    @abc.abstractmethod
    def patchify(self, sample: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One raw sample -> ``(values [n, value_dim] float32, coords int32 [n, 4], meta)``.

        Raises:
            ModalityInputError: for a sample this modality cannot represent.
        """

    @abc.abstractmethod
    def unpatchify(self, values: torch.Tensor, coords: torch.Tensor, meta: dict[str, Any]) -> Any:
        """Invert :meth:`patchify`: ``unpatchify(*patchify(x))`` equals ``x`` (as a tensor)."""

    @abc.abstractmethod
    def grid_shape(self, meta: dict[str, Any]) -> tuple[int, int, int]:
        """The token grid of a sample, in this modality's ``layout`` (coords lie inside it)."""

    @abc.abstractmethod
    def examples(self, seed: int) -> list[Any]:
        """A few small valid samples drawn from ``seed``, for contract tests and demos."""

    @abc.abstractmethod
    def invalid_examples(self) -> list[Any]:
        """Inputs that :meth:`patchify` must reject with :class:`ModalityInputError`."""

    # ------------------------------------------------------------------------ time tiles
    def split_time(self, sample: Any, steps: int) -> list[Any] | None:
        """Split one raw sample into consecutive pieces of ``steps`` latent time steps (the
        last may be shorter) whose ``patchify`` gives exactly the tokens of those steps with
        time re-based to 0; None (the default) when the sample has no time axis to split.

        The tokenizer then patchifies, encodes and decodes a long sample piece by piece, so
        memory is bounded by one tile. A modality that splits also implements
        :meth:`join_meta` and :meth:`join_time`.
        """
        return None

    def join_meta(self, metas: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The whole sample's meta from its pieces' metas (see :meth:`split_time`)."""
        raise NotImplementedError(f"{self.name}: split_time without join_meta")

    def join_time(self, pieces: Any, meta: dict[str, Any]) -> Any:
        """The whole sample from an iterable of decoded pieces, in order (see
        :meth:`split_time`); consume it lazily so only one piece is alive at a time."""
        raise NotImplementedError(f"{self.name}: split_time without join_time")

    # ------------------------------------------------------------------------ batch helpers
    def pack(self, samples: Sequence[Any]) -> SparseLatent:
        """Patchify each sample and pack them: feats are the token values ``[N, value_dim]``."""
        return self.pack_parts(self.patchify_all(samples))

    def patchify_all(self, samples: Sequence[Any]) -> list[tuple[torch.Tensor, torch.Tensor, dict]]:
        """``patchify`` of each sample of a sequence.

        Raises:
            ModalityInputError: ``samples`` is not a sequence (a single sample, a path).
        """
        if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
            raise ModalityInputError(
                f"{self.name}: pack() takes a sequence of samples, got {type(samples).__name__}"
            )
        return [self.patchify(s) for s in samples]

    def pack_parts(
        self, parts: Sequence[tuple[torch.Tensor, torch.Tensor, dict]], *, validate: bool = True
    ) -> SparseLatent:
        """``patchify`` results ``(values [n_b, d], coords [n_b, 4], meta)`` packed into one
        latent ``[N, d]`` (``validate=False``: the caller checked them)."""
        if not parts:
            return SparseLatent(
                torch.zeros(0, self.value_dim),
                torch.zeros(0, 4, dtype=torch.int32),
                torch.zeros(0, dtype=torch.int64),
                modality=(),
                meta=(),
            )
        return SparseLatent(
            torch.cat([v for v, _, _ in parts]),  # [N, d]
            torch.cat([c for _, c, _ in parts]),  # [N, 4]
            torch.tensor([v.shape[0] for v, _, _ in parts], dtype=torch.int64),  # [B]
            modality=self.name,
            meta=[m for _, _, m in parts],
            validate=validate,
        )

    def unpack(self, latent: SparseLatent) -> list[Any]:
        """Unpatchify every sample of a latent whose feats are token values."""
        out = []
        for b, part in enumerate(latent.unpack()):
            if part.modality[0] != self.name:
                raise ModalityInputError(
                    f"{self.name}: sample {b} of the latent is {part.modality[0]!r}"
                )
            out.append(self.unpatchify(part.feats, part.coords, part.meta[0]))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, value_dim={self.value_dim})"


def rgb_stats(
    owner: str, mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Check an RGB mean/std pair: three finite numbers each, std > 0.

    Raises:
        ModalityInputError: naming ``owner`` and the bad argument.
    """
    out = []
    for label, value in (("input_mean", mean), ("input_std", std)):
        try:
            triple = tuple(float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ModalityInputError(f"{owner}: {label} must be 3 numbers, got {value!r}") from exc
        if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
            raise ModalityInputError(f"{owner}: {label} must be 3 finite numbers, got {value!r}")
        out.append(triple)
    if min(out[1]) <= 0:
        raise ModalityInputError(f"{owner}: input_std must be positive, got {std!r}")
    return out[0], out[1]
