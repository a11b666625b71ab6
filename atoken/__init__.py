"""atoken: an open, trainable, plugin-based unified vision tokenizer (AToken).

Images, videos and 3D assets share one sparse 4D latent: a set of (feature, [t, x, y, z])
pairs per sample, packed into a :class:`SparseLatent`. Components (modalities, bottlenecks,
heads, losses, attention backends, metrics) come from plugins; :func:`get_registry` lists them.
"""

from importlib.metadata import PackageNotFoundError, version

from atoken import moved  # noqa: F401 (first: old import paths of moved modules resolve)
from atoken.core.coords import gather_from_grid, raster_coords, scatter_to_grid
from atoken.core.errors import (
    AtokenError,
    ConfigError,
    CoordinateError,
    DuplicateComponentError,
    LatentValidationError,
    ModalityInputError,
    PluginLoadError,
    TooManyTokensError,
    UnknownComponentError,
    WeightsNotFoundError,
)
from atoken.core.latent import SparseLatent
from atoken.core.modality import Modality
from atoken.core.patch_embed import PatchEmbed4D
from atoken.core.rope import Rope4D
from atoken.plugins.hookspecs import hookimpl
from atoken.plugins.manager import get_plugin_manager, get_registry, list_plugins
from atoken.tokenizer import Tokenizer, create_tokenizer

try:
    __version__ = version("atoken")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AtokenError",
    "ConfigError",
    "CoordinateError",
    "DuplicateComponentError",
    "LatentValidationError",
    "Modality",
    "ModalityInputError",
    "PatchEmbed4D",
    "PluginLoadError",
    "Rope4D",
    "SparseLatent",
    "Tokenizer",
    "TooManyTokensError",
    "UnknownComponentError",
    "WeightsNotFoundError",
    "__version__",
    "create_tokenizer",
    "gather_from_grid",
    "get_plugin_manager",
    "get_registry",
    "hookimpl",
    "list_plugins",
    "raster_coords",
    "scatter_to_grid",
]
