"""The model kernel of atoken: the latent contract, coordinates, registries and model code.

The core imports no plugin module and never imports pluggy: components reach it through the
registries that :mod:`atoken.plugins` fills.
"""

from atoken.core.config import BackboneConfig, EncoderConfig, TokenizerConfig, load_preset
from atoken.core.coords import gather_from_grid, grid_index, raster_coords, scatter_to_grid
from atoken.core.encoder import Encoder
from atoken.core.errors import (
    AtokenError,
    ComponentError,
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
from atoken.core.registry import Registries, Registry
from atoken.core.rope import Rope4D

__all__ = [
    "AtokenError",
    "BackboneConfig",
    "ComponentError",
    "ConfigError",
    "CoordinateError",
    "DuplicateComponentError",
    "Encoder",
    "EncoderConfig",
    "LatentValidationError",
    "Modality",
    "ModalityInputError",
    "PatchEmbed4D",
    "PluginLoadError",
    "Registries",
    "Registry",
    "Rope4D",
    "SparseLatent",
    "TokenizerConfig",
    "TooManyTokensError",
    "UnknownComponentError",
    "WeightsNotFoundError",
    "gather_from_grid",
    "grid_index",
    "load_preset",
    "raster_coords",
    "scatter_to_grid",
]
