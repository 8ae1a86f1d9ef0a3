"""Transform families (parameterisation, identity, grid) and their registry."""

from torchstn.transforms.affine import (
    Affine,
    Affine3D,
    Attention,
    Attention3D,
    FixedScaleTranslation,
    MatrixFamily,
    Similarity,
    Translation,
    Translation3D,
)
from torchstn.transforms.base import TransformFamily, get_transform, list_transforms, register_transform
from torchstn.transforms.projective import Projective
from torchstn.transforms.tps import ThinPlateSpline

__all__ = [
    "TransformFamily",
    "MatrixFamily",
    "get_transform",
    "list_transforms",
    "register_transform",
    "Affine",
    "Attention",
    "Similarity",
    "Translation",
    "FixedScaleTranslation",
    "Projective",
    "ThinPlateSpline",
    "Affine3D",
    "Attention3D",
    "Translation3D",
]
