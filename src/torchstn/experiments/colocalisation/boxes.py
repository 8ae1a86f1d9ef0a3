"""Boxes of the co-localisation experiment: the ST's attention windows as pixel boxes, IoU with the true digit boxes,
and the success measure of the paper (IoU > 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchstn.coords import pixel_from_normalised
from torchstn.errors import ShapeError
from torchstn.nn import SpatialTransformer
from torchstn.points import transform_boxes

__all__ = ["box_iou", "attention_boxes", "box_stats", "predict_boxes", "localisation_rate"]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes ``(..., 4)`` as ``(x1, y1, x2, y2)``, element-wise with broadcasting
    (``box_iou(a[:, None], b[None])`` is torchvision's pairwise ``(N, M)``). Boxes touching at an edge give 0; a pair
    whose union is empty gives 0.

    Raises:
        ShapeError: boxes whose last dim is not 4.

    Example:
        >>> box_iou(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 3.0, 2.0]))  # 2 / (4 + 4 - 2)
        tensor(0.3333)
    """
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ShapeError(f"boxes must be (..., 4) as (x1, y1, x2, y2), got {tuple(a.shape)} and {tuple(b.shape)}")
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0.0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0.0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0.0).prod(-1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def attention_boxes(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The input windows of attention transforms ``theta (B, 3) = (s, tx, ty)`` as pixel boxes ``(B, 4)``
    ``(x1, y1, x2, y2)`` in pixel-edge coordinates of an input of spatial ``size (H, W)`` (the convention of
    :class:`~torchstn.data.CoLocalisation` ``.boxes``: column ``c`` covers ``[c, c + 1)``).

    The window is where the output's outer edges (``[-1, 1]^2``) are read (:func:`torchstn.points.transform_boxes`),
    taken to pixel centres with :func:`torchstn.coords.pixel_from_normalised`, then shifted by half a pixel to edges.

    Raises:
        ShapeError: ``theta`` not ``(B, 3)``.

    Example:
        >>> attention_boxes(torch.tensor([[1 / 3, 0.0, 0.0]]), (84, 84))  # the central 28x28 square
        tensor([[28., 28., 56., 56.]])
    """
    if theta.dim() != 2 or theta.shape[-1] != 3:
        raise ShapeError(f"theta must be (B, 3) as (s, tx, ty), got {tuple(theta.shape)}")
    whole = theta.new_tensor([-1.0, -1.0, 1.0, 1.0]).expand(theta.shape[0], 1, 4)  # (B, 1, 4) the output's edges
    window = transform_boxes("attention", theta, whole)[:, 0].double()  # (B, 4) normalised, in the input
    to_pixel = pixel_from_normalised(tuple(size), device=theta.device)  # (3, 3), pixel centres at integers
    corners = window.view(-1, 2, 2)  # (B, 2 corners, (x, y))
    centres = corners @ to_pixel[:2, :2].T + to_pixel[:2, 2]  # (B, 2, 2)
    return (centres + 0.5).view(-1, 4).to(theta.dtype)


def box_stats(boxes: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """How well predicted ``boxes (N, 4)`` localise the true ``truth (N, 4)`` (pixel edges).

    Returns:
        ``{"rate": share of the boxes with IoU > threshold (0..1), "mean_iou", "window_px": mean box width in
        pixels, "centre_error_px": median distance between the boxes' centres}``.

    Example:
        >>> truth = torch.tensor([[0.0, 0.0, 28.0, 28.0], [10.0, 10.0, 38.0, 38.0]])
        >>> box_stats(truth + torch.tensor([[2.0, 0.0, 2.0, 0.0], [30.0, 0.0, 30.0, 0.0]]), truth)["rate"]
        0.5
    """
    boxes, truth = boxes.double(), truth.double()
    iou = box_iou(boxes, truth)
    offset = ((boxes[:, :2] + boxes[:, 2:]) / 2 - (truth[:, :2] + truth[:, 2:]) / 2).norm(dim=1)
    return {
        "rate": float((iou > threshold).double().mean()),
        "mean_iou": float(iou.mean()),
        "window_px": float((boxes[:, 2] - boxes[:, 0]).mean()),
        "centre_error_px": float(offset.median()),
    }


@torch.no_grad()
def predict_boxes(st: SpatialTransformer, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The ST's windows on ``images (N, 1, H, W)`` as pixel-edge boxes ``(N, 4)`` (:func:`attention_boxes`)."""
    thetas = [st.predict_theta(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return attention_boxes(torch.cat(thetas), images.shape[-2:])


def localisation_rate(st: SpatialTransformer, dataset, threshold: float = 0.5) -> dict[str, float]:
    """How well ``st`` localises the digits of a :class:`~torchstn.data.CoLocalisation` set: :func:`box_stats` of
    its windows (:func:`predict_boxes`) against the set's ``boxes``."""
    images, _ = dataset.batch(torch.arange(len(dataset)))
    return box_stats(predict_boxes(st, images), dataset.boxes, threshold)
