"""Typed errors (and warnings) of atoken.

Every error atoken raises on purpose derives from :class:`AtokenError`, so callers can catch the
whole family at once. Each subclass also derives from the builtin that best describes it
(``ValueError``, ``LookupError``, ``ImportError``), so generic handlers keep working. Warnings
atoken issues on purpose have their own categories (:class:`NonFiniteWeightsWarning`), so they
can be filtered or turned into errors one by one.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = [
    "AtokenError",
    "BadSampleError",
    "CheckpointError",
    "ComponentError",
    "ConfigError",
    "CoordinateError",
    "DataModalityError",
    "DuplicateComponentError",
    "EmbeddingSizeError",
    "LatentValidationError",
    "ModalityInputError",
    "NonFiniteWeightsWarning",
    "OutputFolderError",
    "PluginLoadError",
    "RunFolderError",
    "StateDictMismatchError",
    "StoreError",
    "StoreIntegrityError",
    "StoreLockedError",
    "StoreSchemaError",
    "TooManyTokensError",
    "UnknownComponentError",
    "UnknownModalityError",
    "WeightsNotFoundError",
]


class AtokenError(Exception):
    """Base class of every error raised on purpose by atoken."""

    def within(self, where: str) -> AtokenError:
        """This error, its message now starting with ``where`` (e.g. ``"[[stages]] fsq / "``,
        what was being built when it was raised); returned for ``raise exc.within(...)``."""
        if self.args and not str(self.args[0]).startswith(where):
            self.args = (f"{where}{self.args[0]}", *self.args[1:])
        return self


class LatentValidationError(AtokenError, ValueError):
    """A :class:`~atoken.SparseLatent` was built from inconsistent parts.

    ``field`` names the offending field (``"feats"``, ``"coords"``, ``"seqlens"``,
    ``"modality"`` or ``"meta"``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class CoordinateError(AtokenError, ValueError):
    """Coordinates do not fit a grid (out of range, wrong shape or an unknown layout)."""


class ModalityInputError(AtokenError, ValueError):
    """A modality was given a sample it cannot turn into tokens (or tokens it cannot decode)."""


class TooManyTokensError(ModalityInputError):
    """A sample would produce more tokens than the modality's ``max_tokens`` guard allows."""


class WeightsNotFoundError(AtokenError, FileNotFoundError):
    """Pretrained weights a component needs are not on this machine (nothing is downloaded).

    The message says which file is missing, where atoken looked and how to provide it.
    """


class ConfigError(AtokenError, ValueError):
    """A configuration value or run file is invalid."""


class DataModalityError(ConfigError):
    """A data source holds samples of another modality than the task trains (e.g. an RGB-D
    media store given to an image task)."""


class EmbeddingSizeError(ConfigError):
    """Two embeddings that must share one space have different sizes (e.g. a distillation
    teacher whose image embedding is not the size of the text embeddings)."""


class BadSampleError(AtokenError, ValueError):
    """A training sample cannot be read: a truncated tar member, an undecodable image or a
    sample without the key the source reads. The message names the shard (or dataset) and
    the sample's key; so do the attributes ``shard`` and ``key`` (None when the error was
    re-raised from a data worker, which keeps only the message)."""

    def __init__(self, message: str, *, shard: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.shard, self.key = shard, key


class RunFolderError(AtokenError, ValueError):
    """A run's output folder holds another run (refused without ``--resume``/``--overwrite``),
    or a resumed checkpoint was written by a different run configuration."""


class OutputFolderError(AtokenError, ValueError):
    """An output folder is refused: it holds files atoken did not write, or a result atoken
    wrote that would be replaced without ``overwrite``. ``folder`` names it."""

    def __init__(self, message: str, *, folder: str) -> None:
        super().__init__(f"{folder!r}: {message}")
        self.folder = folder


class NonFiniteWeightsWarning(UserWarning):
    """Weights being loaded or converted hold NaN or infinite values (the message names the
    first tensors and how many there are); the model computes NaN wherever they reach."""


class StateDictMismatchError(AtokenError, ValueError):
    """A state dict does not fit the model it is mapped into: keys missing, keys left over, or
    shapes that differ. Every list is kept whole on the error (``missing``, ``unexpected``,
    ``wrong_shape`` as ``(key, expected shape, found shape)``); the message names the first ones.
    """

    def __init__(
        self,
        source: str,
        *,
        missing: list[str] | tuple[str, ...] = (),
        unexpected: list[str] | tuple[str, ...] = (),
        wrong_shape: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | tuple = (),
    ) -> None:
        self.source = source
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.wrong_shape = sorted(wrong_shape)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {', '.join(self.missing[:8])}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {', '.join(self.unexpected[:8])}")
        if self.wrong_shape:
            shapes = ", ".join(
                f"{k} (expected {list(want)}, found {list(got)})"
                for k, want, got in self.wrong_shape[:8]
            )
            parts.append(f"{len(self.wrong_shape)} of the wrong shape: {shapes}")
        super().__init__(f"{source}: the state dict does not fit: " + "; ".join(parts))


class ComponentError(AtokenError):
    """Base class of registry errors."""


class DuplicateComponentError(ComponentError, ValueError):
    """Two plugins registered the same component name for one kind."""

    def __init__(self, kind: str, name: str, first_plugin: str, second_plugin: str) -> None:
        super().__init__(
            f"{kind} {name!r} is registered twice: first by plugin {first_plugin!r}, "
            f"then by plugin {second_plugin!r}. Disable one of them with "
            f"ATOKEN_DISABLE_PLUGINS={second_plugin}"
        )
        self.kind, self.name = kind, name
        self.plugins = (first_plugin, second_plugin)


class UnknownComponentError(ComponentError, LookupError):
    """No component of that kind has that name; the message lists close matches."""

    def __init__(self, kind: str, name: str, known: list[str], close: list[str]) -> None:
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        available = ", ".join(known) if known else "none"
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {available}.")
        self.kind, self.name = kind, name
        self.close_matches = close

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a KeyError
        return str(self.args[0])


class CheckpointError(AtokenError, ValueError):
    """A checkpoint is missing, unreadable or does not fit the model it is loaded into."""


class UnknownModalityError(ConfigError, LookupError):
    """A call names a modality the tokenizer was not built for (a model holds exactly the
    modalities it was built with, whatever plugins are installed); the message lists them and
    how to add one."""

    def __init__(self, name: str, built: Sequence[str]) -> None:
        close = difflib.get_close_matches(str(name), list(built), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(
            f"this tokenizer has no modality {name!r}: it was built for {list(built)}.{hint} "
            f"Build it with modalities=[..., {name!r}] (a run file: [model] modalities), with "
            "the plugin that registers it installed"
        )
        self.name, self.built = name, tuple(built)

    def __str__(self) -> str:
        return str(self.args[0])


class PluginLoadError(ComponentError, ImportError):
    """A plugin failed to load; the message names the plugin, its distribution and how to
    skip it (``ATOKEN_DISABLE_PLUGINS=<plugin>``)."""

    def __init__(self, plugin: str, distribution: str, cause: BaseException) -> None:
        super().__init__(
            f"plugin {plugin!r} from distribution {distribution!r} failed to load: "
            f"{type(cause).__name__}: {cause}; skip it with ATOKEN_DISABLE_PLUGINS={plugin}"
        )
        self.plugin, self.distribution = plugin, distribution


class StoreError(AtokenError, ValueError):
    """A zarr store (dataset or latents) cannot be opened, read or written as its schema says.

    The message names the store, the array and the sample; so do the attributes ``store``
    (the URL), ``array`` (an array name, ``"attributes"`` for the group's ``atoken``
    attributes in its ``zarr.json``, or ``None`` for the store as a whole) and ``sample`` (an
    index, a description such as ``"0..9"``, or ``None`` for every sample).
    """

    def __init__(
        self,
        message: str,
        *,
        store: str,
        array: str | None = None,
        sample: int | str | None = None,
        name: str | None = None,
    ) -> None:
        parts = [f"store {store!r}"]
        if array == "attributes":  # the group's metadata: there is no array of that name
            parts.append("its 'atoken' attributes (zarr.json)")
        elif array is not None:
            parts.append(f"array {array!r}")
        if sample is not None:
            parts.append(f"sample {sample}")
        elif array not in (None, "attributes"):
            parts.append("all samples")
        where = ", ".join(parts)
        if name:
            where += f" ({name!r})"
        super().__init__(f"{where}: {message}")
        self.store, self.array, self.sample, self.sample_name = store, array, sample, name


class StoreLockedError(StoreError):
    """Another writer holds the store's lock (``holder`` describes it: process, host, since)."""

    def __init__(self, message: str, *, store: str, holder: str) -> None:
        super().__init__(message, store=store)
        self.holder = holder


class StoreSchemaError(StoreError):
    """The store holds no atoken schema, another schema, or a version this atoken cannot read."""


class StoreIntegrityError(StoreError):
    """Stored data is damaged: a corrupt or truncated chunk, a checksum that does not match,
    a missing index array, or an index that disagrees with the data."""
