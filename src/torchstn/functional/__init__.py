"""Pure differentiable functions: grids, samplers and transform utilities (no parameters, no state)."""

from torchstn.functional.affine import (
    affine_grid,
    compose_affine,
    invert_affine,
    to_homogeneous,
    transform_points_affine,
)
from torchstn.functional.projective import projective_grid, transform_points_projective
from torchstn.functional.sample import sample
from torchstn.functional.tps import tps_grid, tps_grid_direct, tps_transform_points

__all__ = [
    "affine_grid",
    "compose_affine",
    "invert_affine",
    "to_homogeneous",
    "transform_points_affine",
    "projective_grid",
    "transform_points_projective",
    "sample",
    "tps_grid",
    "tps_grid_direct",
    "tps_transform_points",
]
