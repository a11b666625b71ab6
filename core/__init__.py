"""The engine of atoken: the latent contract, coordinates, registries and model code.

The core imports no plugin module and never imports pluggy: components reach it through the
registries that :mod:`atoken.plugins` fills.
"""

from atoken.core.coords import gather_from_grid, grid_index, raster_coords, scatter_to_grid
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
from atoken.core.registry import Registries, Registry

__all__ = [
    "AtokenError",
    "ComponentError",
    "ConfigError",
    "CoordinateError",
    "DuplicateComponentError",
    "LatentValidationError",
    "Modality",
    "ModalityInputError",
    "PluginLoadError",
    "Registries",
    "Registry",
    "SparseLatent",
    "TooManyTokensError",
    "UnknownComponentError",
    "WeightsNotFoundError",
    "gather_from_grid",
    "grid_index",
    "raster_coords",
    "scatter_to_grid",
]
