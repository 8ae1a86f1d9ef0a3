"""The thin-plate-spline family (the paper's TPS transformer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchstn.errors import OptionError
from torchstn.functional.tps import lattice, tps_grid, tps_grid_direct, tps_transform_points
from torchstn.transforms.base import TransformFamily, register_transform

__all__ = ["ThinPlateSpline"]


@register_transform("tps")
class ThinPlateSpline(TransformFamily):
    """Thin-plate spline with ``K = grid_size**2`` control points on a regular lattice spanning ``[-1, 1]^2``.

    ``theta (B, 2K) = (x1, y1, x2, y2, ...)`` are the *source* (input) positions of the control points, in the
    lattice's row-major order (x fastest); the identity puts every point at its lattice position. The default
    ``grid_size=4`` gives the paper's 16 control points.

    Args:
        grid_size: control points per side (>= 2).
        regularisation: Tikhonov term ``lambda`` added to the kernel diagonal (0 interpolates exactly; larger
            values give smoother, more affine warps).
        precompute: use the precomputed per-size matrix (one batched product per forward) instead of solving the
            system for every sample; both give the same grid.

    Example:
        >>> fam = ThinPlateSpline(grid_size=2)
        >>> fam.identity()
        tensor([-1., -1.,  1., -1., -1.,  1.,  1.,  1.])
    """

    ranks = (2,)
    has_matrix = False

    def __init__(self, grid_size: int = 4, regularisation: float = 0.0, precompute: bool = True):
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
            raise OptionError(f"tps grid_size must be an int >= 2, got {grid_size!r}")
        if not float(regularisation) >= 0.0:
            raise OptionError(f"tps regularisation must be >= 0, got {regularisation!r}")
        self.grid_size = grid_size
        self.regularisation = float(regularisation)
        self.precompute = bool(precompute)

    def identity(self, *, dtype=None, device=None):
        return lattice(self.grid_size, dtype=dtype or torch.get_default_dtype(), device=device).reshape(-1)

    def translation(self, shift, *, dtype=None, device=None):
        t = self.check_shift(shift, dtype, device)
        ctrl = lattice(self.grid_size, dtype=t.dtype, device=t.device)  # (K, 2)
        return (ctrl + t).reshape(-1)  # every control point reads its lattice position + shift

    def grid(self, theta: torch.Tensor, out_size: Sequence[int] | int, *, align_corners: bool = False) -> torch.Tensor:
        size = self.check_out_size(out_size)
        src = self.check_theta(theta, finite=False).view(theta.shape[0], -1, 2)  # (B, K, 2)
        fn = tps_grid if self.precompute else tps_grid_direct
        return fn(src, size, self.grid_size, align_corners, self.regularisation)

    def transform_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        theta = self.check_theta(theta, finite=False)
        pts = self.check_points(points, theta.shape[0])
        return tps_transform_points(theta.view(theta.shape[0], -1, 2), pts, self.grid_size, self.regularisation)

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}, regularisation={self.regularisation}, precompute={self.precompute}"
