"""The plane projective (homography) family."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchstn.functional.projective import projective_grid, transform_points_projective
from torchstn.transforms.base import TransformFamily, register_transform

__all__ = ["Projective"]


@register_transform("projective")
class Projective(TransformFamily):
    """Homography ``theta (B, 8)``: the first eight row-major entries of a ``3x3`` matrix with ``h33 = 1``.

    With zero perspective terms (``theta[6:] = 0``) it equals the affine family on ``theta[:6]``. The division by
    the third homogeneous coordinate is guarded (see :func:`torchstn.functional.projective_grid`).

    Example:
        >>> fam = Projective()
        >>> fam.matrix(fam.identity().unsqueeze(0))
        tensor([[[1., 0., 0.],
                 [0., 1., 0.],
                 [0., 0., 1.]]])
    """

    ranks = (2,)

    def identity(self, *, dtype=None, device=None):
        return torch.tensor([1, 0, 0, 0, 1, 0, 0, 0], dtype=dtype or torch.get_default_dtype(), device=device)

    def translation(self, shift, *, dtype=None, device=None):
        t = self.check_shift(shift, dtype, device)
        theta = self.identity(dtype=t.dtype, device=t.device)
        theta[[2, 5]] += t  # the translation column of the top two rows
        return theta

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.cat((theta, theta.new_ones(theta.shape[0], 1)), dim=1).view(-1, 3, 3)

    def grid(self, theta: torch.Tensor, out_size: Sequence[int] | int, *, align_corners: bool = False) -> torch.Tensor:
        size = self.check_out_size(out_size)
        return projective_grid(self.matrix(self.check_theta(theta, finite=False)), size, align_corners)

    def transform_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        theta = self.check_theta(theta, finite=False)
        return transform_points_projective(self.matrix(theta), self.check_points(points, theta.shape[0]))
