"""torchstn: Spatial Transformer Networks for PyTorch.

``U -> localisation net -> theta -> family.grid(theta, out_size) -> sample(U, grid) -> V``. The coordinate
convention is in :mod:`torchstn.coords` and ``docs/conventions.md``.
"""

from torchstn import coords, functional, transforms
from torchstn.errors import (
    ChecksumError,
    ConfigError,
    DataError,
    DTypeError,
    ExportError,
    NonFiniteError,
    OptionError,
    ShapeError,
    TorchstnError,
)
from torchstn.functional import (
    affine_grid,
    compose_affine,
    invert_affine,
    sample,
)
from torchstn.nn import (
    CompositionalSpatialTransformer,
    ParallelSpatialTransformers,
    SpatialTransformer,
    conv_localisation,
    fc_localisation,
    identity_penalty,
    param_groups,
    record_theta,
)
from torchstn.points import transform_boxes, transform_points
from torchstn.transforms import TransformFamily, get_transform, list_transforms, register_transform

__version__ = "0.1.0"

__all__ = [
    "coords",
    "functional",
    "transforms",
    "sample",
    "affine_grid",
    "compose_affine",
    "invert_affine",
    "transform_points",
    "transform_boxes",
    "get_transform",
    "list_transforms",
    "register_transform",
    "TransformFamily",
    "SpatialTransformer",
    "ParallelSpatialTransformers",
    "CompositionalSpatialTransformer",
    "fc_localisation",
    "conv_localisation",
    "param_groups",
    "record_theta",
    "identity_penalty",
    "TorchstnError",
    "ShapeError",
    "DTypeError",
    "OptionError",
    "NonFiniteError",
    "DataError",
    "ChecksumError",
    "ConfigError",
    "ExportError",
]
