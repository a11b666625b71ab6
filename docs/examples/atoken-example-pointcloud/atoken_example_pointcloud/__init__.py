"""A point-cloud modality for atoken, as a third party writes it: coloured point sets as
sparse xyz tokens, trained by atoken's generic ``reconstruction`` task with its ``chamfer``
loss and metrics, read and written as ``.npy`` files by ``atoken reconstruct``/``encode``/``eval``.

Installed (``pip install -e docs/examples/atoken-example-pointcloud``), it registers the
``pointcloud`` modality and the ``synthetic_clouds`` data source (entry point ``pointcloud``).
"""

from atoken_example_pointcloud.modality import PointCloudModality, register_modalities
from atoken_example_pointcloud.source import SyntheticClouds, register_data_sources, shape_cloud

__all__ = [
    "PointCloudModality",
    "SyntheticClouds",
    "register_data_sources",
    "register_modalities",
    "shape_cloud",
]
