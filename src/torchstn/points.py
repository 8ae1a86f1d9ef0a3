"""Map points and boxes between a spatial transformer's output and input frames (normalised coordinates)."""

from __future__ import annotations

import torch

from torchstn._checks import look_up_option
from torchstn.errors import OptionError, ShapeError
from torchstn.functional.affine import invert_affine, transform_points_affine
from torchstn.functional.projective import transform_points_projective
from torchstn.transforms import TransformFamily, get_transform

__all__ = ["transform_points", "transform_boxes"]


def transform_points(
    transform: str | TransformFamily, theta: torch.Tensor, points: torch.Tensor, direction: str = "output_to_input"
) -> torch.Tensor:
    """Map points ``(B, N, n)`` with the transform ``theta``.

    ``"output_to_input"`` gives, for a point of the ST's output, where it was read in the input (every family).
    ``"input_to_output"`` gives where an input point appears in the output (families with a matrix: the inverse).

    Raises:
        OptionError: an unknown ``transform`` or ``direction``, or ``"input_to_output"`` for a family without a
            matrix (``tps``).
        ShapeError, DTypeError: ``theta`` or ``points`` of the wrong shape or dtype.

    Example:
        >>> theta = torch.tensor([[0.5, 0.2, -0.1]])  # attention: zoom x2 on the window centred at (0.2, -0.1)
        >>> transform_points("attention", theta, torch.tensor([[[0.2, -0.1]]]), "input_to_output")
        tensor([[[0., 0.]]])
    """
    family = get_transform(transform)
    look_up_option("direction", direction, ("output_to_input", "input_to_output"))
    if direction == "output_to_input":
        return family.transform_points(theta, points)
    if not family.has_matrix:
        raise OptionError(
            f"transform {family.name!r} has no closed-form inverse: direction='input_to_output' needs a "
            "family with a matrix; only 'output_to_input' is available"
        )
    theta = family.check_theta(theta, finite=False)
    pts = family.check_points(points, theta.shape[0])
    inv = invert_affine(family.matrix(theta))
    if inv.shape[-1] == inv.shape[-2]:
        return transform_points_projective(inv, pts)
    return transform_points_affine(inv, pts)


def transform_boxes(
    transform: str | TransformFamily, theta: torch.Tensor, boxes: torch.Tensor, direction: str = "output_to_input"
) -> torch.Tensor:
    """Map axis-aligned 2D boxes ``(B, N, 4)`` as ``(x1, y1, x2, y2)`` in normalised coordinates; the result is the
    axis-aligned box around the four mapped corners.

    Example:
        >>> theta = torch.tensor([[0.5, 0.0, 0.0]])  # attention window of half-size 0.5 at the centre
        >>> transform_boxes("attention", theta, torch.tensor([[[-1.0, -1.0, 1.0, 1.0]]]))  # whole output
        tensor([[[-0.5000, -0.5000,  0.5000,  0.5000]]])
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ShapeError(f"boxes must be (B, N, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(c, -1) for c in ((x1, y1), (x2, y1), (x1, y2), (x2, y2))], dim=2)  # (B, N, 4, 2)
    B, N = boxes.shape[:2]
    mapped = transform_points(transform, theta, corners.reshape(B, N * 4, 2), direction).view(B, N, 4, 2)
    lo, hi = mapped.min(dim=2).values, mapped.max(dim=2).values  # (B, N, 2)
    return torch.cat((lo, hi), dim=-1)
