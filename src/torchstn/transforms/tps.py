"""The thin-plate-spline family (the paper's TPS transformer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchstn.errors import OptionError
from torchstn.functional.tps import check_layout, control_points, tps_grid, tps_grid_direct, tps_transform_points
from torchstn.transforms.base import TransformFamily, register_transform

__all__ = ["ThinPlateSpline"]


@register_transform("tps")
class ThinPlateSpline(TransformFamily):
    """Thin-plate spline through ``K`` control points: a ``grid_size x grid_size`` lattice spanning ``[-1, 1]^2``
    by default, or any fixed ``layout``.

    ``theta (B, 2K) = (x1, y1, x2, y2, ...)`` are the *source* (input) positions of the control points, in the
    layout's order (a lattice's is row-major, x fastest); the identity puts every point at its layout position. The
    default ``grid_size=4`` gives the paper's 16 control points; ``layout=(2, 10)`` gives the 20 fiducial points of
    the RARE/ASTER text rectifier (two rows of 10 along the top and bottom edges).

    Args:
        grid_size: control points per side (>= 2) of the square lattice; ignored with ``layout``.
        regularisation: Tikhonov term ``lambda`` added to the kernel diagonal (0 interpolates exactly; larger
            values give smoother, more affine warps).
        precompute: use the precomputed per-size matrix (one batched product per forward) instead of solving the
            system for every sample; both give the same grid.
        layout: the control points' output positions instead of the square lattice: ``(rows, cols)`` for a lattice
            spanning ``[-1, 1]^2`` or ``(K, 2)`` normalised points ``(x, y)`` (finite, distinct, not all on one
            line); see :func:`torchstn.functional.tps.check_layout`.
        kernel_eps: 0 for the exact kernel ``r^2 log r^2``; ``1e-6`` reproduces clovaai's TPS, whose grid uses
            ``r^2 log(r + 1e-6)`` (a grid about 1e-4 px away from the exact one at 32 x 100).

    Raises:
        OptionError: a ``grid_size`` that is no int >= 2, a ``layout`` :func:`~torchstn.functional.tps.check_layout`
            refuses (says why), a ``grid_size`` other than the default together with ``layout``, a negative
            ``regularisation``, a ``kernel_eps`` outside ``[0, 0.01)``.

    Example:
        >>> fam = ThinPlateSpline(grid_size=2)
        >>> fam.identity()
        tensor([-1., -1.,  1., -1., -1.,  1.,  1.,  1.])
        >>> ThinPlateSpline(layout=(2, 10)).num_params
        40
        >>> ThinPlateSpline(layout=[[-1, -1], [1, -1], [0, 1]]).identity()
        tensor([-1., -1.,  1., -1.,  0.,  1.])
    """

    ranks = (2,)
    has_matrix = False

    def __init__(
        self,
        grid_size: int = 4,
        regularisation: float = 0.0,
        precompute: bool = True,
        layout: object = None,
        kernel_eps: float = 0.0,
    ):
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
            raise OptionError(f"tps grid_size must be an int >= 2, got {grid_size!r}")
        if not float(regularisation) >= 0.0:
            raise OptionError(f"tps regularisation must be >= 0, got {regularisation!r}")
        if isinstance(kernel_eps, bool) or not isinstance(kernel_eps, (int, float)) or not 0.0 <= kernel_eps < 1e-2:
            raise OptionError(f"tps kernel_eps must be a number in [0, 0.01), got {kernel_eps!r}")
        self.kernel_eps = float(kernel_eps)
        if layout is not None and grid_size != 4:
            raise OptionError(f"tps takes grid_size={grid_size!r} or layout=..., not both")
        #: The checked layout handed to the functions: an int for a square lattice, else a tuple (hashable).
        self.layout = check_layout(grid_size if layout is None else layout)
        self.grid_size = grid_size if layout is None else None
        self.regularisation = float(regularisation)
        self.precompute = bool(precompute)

    def identity(self, *, dtype=None, device=None):
        return control_points(self.layout, dtype=dtype or torch.get_default_dtype(), device=device).reshape(-1)

    def translation(self, shift, *, dtype=None, device=None):
        t = self.check_shift(shift, dtype, device)
        ctrl = control_points(self.layout, dtype=t.dtype, device=t.device)  # (K, 2)
        return (ctrl + t).reshape(-1)  # every control point reads its lattice position + shift

    def grid(self, theta: torch.Tensor, out_size: Sequence[int] | int, *, align_corners: bool = False) -> torch.Tensor:
        size = self.check_out_size(out_size)
        src = self.check_theta(theta, finite=False).view(theta.shape[0], -1, 2)  # (B, K, 2)
        fn = tps_grid if self.precompute else tps_grid_direct
        return fn(src, size, self.layout, align_corners, self.regularisation, kernel_eps=self.kernel_eps)

    def transform_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        theta = self.check_theta(theta, finite=False)
        pts = self.check_points(points, theta.shape[0])
        src = theta.view(theta.shape[0], -1, 2)  # (B, K, 2)
        return tps_transform_points(src, pts, self.layout, self.regularisation, kernel_eps=self.kernel_eps)

    def extra_repr(self) -> str:
        if self.grid_size is not None:
            where = f"grid_size={self.grid_size}"
        elif isinstance(self.layout, int) or isinstance(self.layout[0], int):
            where = f"layout={self.layout}"
        else:
            where = f"layout=<{len(self.layout)} points>"
        eps = f", kernel_eps={self.kernel_eps}" if self.kernel_eps else ""
        return f"{where}, regularisation={self.regularisation}, precompute={self.precompute}{eps}"
