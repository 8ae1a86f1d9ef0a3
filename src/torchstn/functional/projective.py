"""Projective (homography) grids with a guarded perspective division."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchstn.coords import linspace_coords
from torchstn.functional.affine import affine_grid

__all__ = ["projective_grid", "transform_points_projective", "HORIZON_EPS", "FAR"]

#: Denominators ``w`` below this are treated as on or behind the horizon of the homography.
HORIZON_EPS = 1e-3
#: Coordinates are clamped to ``[-FAR, FAR]``: far outside the image, finite even in float16.
FAR = 1e3


def _divide(num: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``num / w`` clamped to ``[-FAR, FAR]`` for points in front of the horizon (``w > HORIZON_EPS``); points on or
    behind it go to ``+-FAR`` in every coordinate (the sign of ``num``, ``+`` where it is 0), so they read the
    padding even where ``num`` is near 0 (dividing by ``HORIZON_EPS`` left those inside the image). Finite values
    and gradients (0 behind the horizon); NaN stays NaN."""
    front = w > HORIZON_EPS
    out = (num / torch.where(front, w, 1.0)).clamp(-FAR, FAR)
    far = torch.where(num < 0, -FAR, torch.where(num >= 0, FAR, num))  # NaN numerators stay NaN
    return torch.where(w <= HORIZON_EPS, far, out)


def projective_grid(matrix: torch.Tensor, out_size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Sampling grid of ``(B, 3, 3)`` homographies (output->input, normalised) -> ``(B, H, W, 2)``.

    The perspective division never yields inf/NaN from finite matrices: coordinates are clamped to
    ``[-FAR, FAR]``, and where the denominator ``w`` is at or below ``HORIZON_EPS`` (the point is on or behind the
    homography's horizon) both coordinates are ``+-FAR`` (the sign of the numerator), so such points read the
    padding. Half precision is computed in float32.

    Example:
        >>> H = torch.eye(3).unsqueeze(0)
        >>> projective_grid(H, (1, 2))
        tensor([[[[-0.5000,  0.0000],
                  [ 0.5000,  0.0000]]]])
    """
    work = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()
    B = work.shape[0]
    num = affine_grid(work[:, :2, :], out_size, align_corners)  # (B, H, W, 2)
    H_, W_ = out_size
    xs = linspace_coords(W_, align_corners, device=work.device, dtype=work.dtype)  # (W,)
    ys = linspace_coords(H_, align_corners, device=work.device, dtype=work.dtype).unsqueeze(-1)  # (H, 1)
    r = work[:, 2].view(B, 3, 1, 1)
    w = r[:, 0] * xs + r[:, 1] * ys + r[:, 2]  # (B, H, W)
    return _divide(num, w.unsqueeze(-1)).to(matrix.dtype)


def transform_points_projective(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, 3, 3)`` homographies to points ``(B, N, 2)`` with the same guarded division.

    Example:
        >>> H = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]])
        >>> transform_points_projective(H, torch.tensor([[[0.5, -0.5]]]))
        tensor([[[ 0.5000, -0.5000]]])
    """
    work = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()
    p = points.to(work.dtype)
    hom = p @ work[:, :, :2].transpose(1, 2) + work[:, :, 2].unsqueeze(1)  # (B, N, 3)
    return _divide(hom[..., :2], hom[..., 2:]).to(points.dtype)
