"""The paper's warp distortions: ``plain``, ``R``, ``RTS``, ``P`` and ``E`` (recipes in
:mod:`torchstn.data.distortions` and ``docs/datasets.md``).

Every warp is a family of :mod:`torchstn.transforms` (``affine``, ``projective``, ``tps``) sampled bilinearly with
zero padding by :func:`torchstn.sample`. Positions are pixel coordinates of :mod:`torchstn.coords` (pixel centres at
integers, ``y`` down); a positive angle turns the digit counter-clockwise as displayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from torchstn.data.distortions.distortion import (
    DIGIT,
    Distortion,
    check_angle,
    check_canvas,
    check_positive,
    check_range,
    placement_centres,
    sin_cos,
    uniform,
    warp,
)
from torchstn.data.distortions.registry import register_distortion
from torchstn.functional.tps import lattice
from torchstn.transforms import get_transform

__all__ = ["Plain", "Rotate", "RotateTranslateScale", "ProjectiveJitter", "Elastic"]

_F64 = torch.float64
_DEG = 3.141592653589793 / 180.0
_MAX_REDRAWS = 64


@register_distortion("plain")
class Plain(Distortion):
    """No distortion: the 28x28 digit as it is (``params`` is empty).

    Example:
        >>> x = torch.rand(2, 1, 28, 28)
        >>> torch.equal(Plain()(x), x)
        True
    """

    def sample_params(self, generator, n):
        self.check_n(n)
        return {}

    def apply(self, images, params, *, compute_dtype=None):
        return self.check_images(images, params).clamp(0.0, 1.0)


@register_distortion("RTS")
class RotateTranslateScale(Distortion):
    """RTS: rotate, scale and place the digit on a larger canvas (one affine warp, output->input).

    ``params``: ``angle (n,)`` degrees, ``scale (n,)`` (the digit's size factor), ``centre (n, 2)`` the digit centre
    ``(x, y)`` in canvas pixels; drawn in that order (``centre`` not drawn for ``placement="centred"``).

    Args:
        max_angle: angles are uniform in ``[-max_angle, max_angle]`` degrees (at most 180).
        scale_range: ``(low, high)``, scales uniform in it.
        canvas: output side in pixels.
        placement: ``"box"`` (uniform such that the scaled 28x28 box stays inside the canvas: MNIST ink lies in the
            central 20x20, so rotation practically never cuts a stroke), ``"anywhere"`` (centre uniform over the
            canvas; the digit may leave it) or ``"centred"``.

    Example:
        >>> rts = RotateTranslateScale()
        >>> params = rts.sample_params(torch.Generator().manual_seed(0), 3)
        >>> sorted(params), rts(torch.rand(3, 1, 28, 28)).shape
        (['angle', 'centre', 'scale'], torch.Size([3, 1, 42, 42]))
    """

    def __init__(
        self,
        max_angle: float = 45.0,
        scale_range: Sequence[float] = (0.7, 1.2),
        canvas: int = 42,
        placement: str = "box",
    ):
        self.max_angle = check_angle("max_angle", max_angle)
        self.scale_range = check_range("scale_range", scale_range)
        self.canvas = check_canvas(canvas)
        self.placement = self.check_placement(placement)
        self.out_size = (self.canvas, self.canvas)
        self._family = get_transform("affine")

    def options(self):
        return {
            "max_angle": self.max_angle,
            "scale_range": self.scale_range,
            "canvas": self.canvas,
            "placement": self.placement,
        }

    def sample_params(self, generator, n):
        n = self.check_n(n)
        angle = uniform(generator, (n,), -self.max_angle, self.max_angle)  # (n,) degrees
        scale = uniform(generator, (n,), *self.scale_range)  # (n,)
        centre = placement_centres(generator, n, self.canvas, scale * (DIGIT / 2), self.placement)  # (n, 2)
        return {"angle": angle, "scale": scale, "centre": centre}

    def matrix(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised output->input affine matrices ``(n, 2, 3)`` (float64) of ``params``.

        In pixels, ``p_in = c_in + R(angle)^-1 (p_out - centre) / scale`` with ``c_in = 13.5`` the digit centre;
        in normalised coordinates this is ``u_in = (S / 28) A (u_out - v)`` with ``v`` the normalised centre.
        """
        sin, cos = sin_cos(params["angle"].to(_F64) * _DEG)  # (n,)
        k = (self.canvas / DIGIT) / params["scale"].to(_F64)  # (n,)
        v = (2.0 * params["centre"].to(_F64) + 1.0) / self.canvas - 1.0  # (n, 2) normalised centre
        a, b, c, d = k * cos, -k * sin, k * sin, k * cos  # (n,) each: [[a, b], [c, d]]
        tx = -(a * v[:, 0] + b * v[:, 1])
        ty = -(c * v[:, 0] + d * v[:, 1])
        return torch.stack((a, b, tx, c, d, ty), dim=1).view(-1, 2, 3)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        theta = self.matrix(params).reshape(-1, 6)  # (B, 6)
        return warp(images, self._family, theta, self.out_size, compute_dtype)


@register_distortion("R")
class Rotate(RotateTranslateScale):
    """R: rotation uniform in ``[-max_angle, max_angle]`` degrees about the digit centre, on a ``canvas`` (default
    28x28; ``canvas=42`` keeps the corners). ``params`` as :class:`RotateTranslateScale` (``scale`` is all ones).

    Example:
        >>> Rotate()(torch.rand(2, 1, 28, 28), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, max_angle: float = 90.0, canvas: int = 28, placement: str = "centred"):
        super().__init__(max_angle, (1.0, 1.0), canvas, placement)

    def options(self):
        return {"max_angle": self.max_angle, "canvas": self.canvas, "placement": self.placement}


def _is_convex(corners: torch.Tensor) -> torch.Tensor:
    """Whether the quads ``(n, 4, 2)`` (corners TL, TR, BL, BR) are convex and not folded -> ``(n,)`` bool."""
    ring = corners[:, [0, 1, 3, 2]]  # (n, 4, 2) in order around the quad
    edge = ring.roll(-1, dims=1) - ring  # (n, 4, 2)
    nxt = edge.roll(-1, dims=1)
    cross = edge[..., 0] * nxt[..., 1] - edge[..., 1] * nxt[..., 0]  # (n, 4) turn at each corner
    return (cross > 0).all(dim=1) | (cross < 0).all(dim=1)


@register_distortion("P")
class ProjectiveJitter(Distortion):
    """P: zoom out by ``scale``, then move each image corner by Gaussian noise; warp by the homography through the
    four point pairs.

    ``params``: ``scale (n,)`` then ``corner_shift (n, 4, 2)`` in pixels, corners in the order top-left, top-right,
    bottom-left, bottom-right, each ``(dx, dy)``. The image corner ``c_k`` lands at ``scale * c_k + shift_k``
    (about the image centre); the output->input homography maps those four points back to ``c_k`` and is solved per
    sample from the 8x8 DLT system in float64 (``torch.linalg.solve``).

    With ``sigma=5`` about 1.4% of the corner draws give a folded (non-convex) quad, whose homography sends part of
    the image past its horizon; with ``convex_only`` (the default) those samples redraw their four shifts (batched
    rounds from the same generator; after 64 rounds a sample keeps zero shifts).

    Args:
        scale_range: ``(low, high)`` of the uniform zoom-out factor.
        sigma: standard deviation of the corner shifts in pixels.
        convex_only: redraw shifts that fold the quad.

    Example:
        >>> p = ProjectiveJitter()
        >>> params = p.sample_params(torch.Generator().manual_seed(0), 2)
        >>> p.matrix(params).shape, p.apply(torch.rand(2, 1, 28, 28), params).shape
        (torch.Size([2, 3, 3]), torch.Size([2, 1, 28, 28]))
    """

    #: Image corners ``(4, 2)`` in normalised coordinates (the image's outer edges, ``align_corners=False``).
    CORNERS = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))

    def __init__(self, scale_range: Sequence[float] = (0.75, 1.0), sigma: float = 5.0, convex_only: bool = True):
        self.scale_range = check_range("scale_range", scale_range)
        self.sigma = check_positive("sigma", sigma)
        self.convex_only = bool(convex_only)
        self._family = get_transform("projective")

    def options(self):
        return {"scale_range": self.scale_range, "sigma": self.sigma, "convex_only": self.convex_only}

    def moved_corners(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Where the image corners land, ``(n, 4, 2)`` normalised (float64)."""
        src = torch.tensor(self.CORNERS, dtype=_F64)  # (4, 2)
        return params["scale"].to(_F64).view(-1, 1, 1) * src + params["corner_shift"].to(_F64) * (2.0 / DIGIT)

    def sample_params(self, generator, n):
        n = self.check_n(n)
        scale = uniform(generator, (n,), *self.scale_range)  # (n,)
        shift = torch.randn((n, 4, 2), generator=generator, dtype=_F64) * self.sigma  # (n, 4, 2) px
        params = {"scale": scale, "corner_shift": shift}
        for _ in range(_MAX_REDRAWS if self.convex_only else 0):  # rounds over the whole batch, not images
            bad = ~_is_convex(self.moved_corners(params))  # (n,)
            if not bool(bad.any()):
                break
            redraw = torch.randn((int(bad.sum()), 4, 2), generator=generator, dtype=_F64) * self.sigma
            shift[bad] = redraw
        else:
            if self.convex_only:
                shift[~_is_convex(self.moved_corners(params))] = 0.0
        return params

    def matrix(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised output->input homographies ``(n, 3, 3)`` (float64, ``h33 = 1``)."""
        dst = self.moved_corners(params)  # (n, 4, 2) output points
        n = dst.shape[0]
        src = torch.tensor(self.CORNERS, dtype=_F64).expand(n, 4, 2)  # (n, 4, 2) input corners
        dx, dy, cx, cy = dst[..., 0], dst[..., 1], src[..., 0], src[..., 1]  # (n, 4) each
        one, zero = torch.ones_like(dx), torch.zeros_like(dx)
        rows_x = torch.stack((dx, dy, one, zero, zero, zero, -cx * dx, -cx * dy), dim=-1)  # (n, 4, 8)
        rows_y = torch.stack((zero, zero, zero, dx, dy, one, -cy * dx, -cy * dy), dim=-1)  # (n, 4, 8)
        system = torch.stack((rows_x, rows_y), dim=2).view(n, 8, 8)  # rows x0, y0, x1, y1, ...
        rhs = torch.stack((cx, cy), dim=2).view(n, 8, 1)
        h = torch.linalg.solve(system, rhs).view(n, 8)  # (n, 8)
        return torch.cat((h, h.new_ones(n, 1)), dim=1).view(n, 3, 3)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        theta = self.matrix(params).reshape(-1, 9)[:, :8]  # (B, 8)
        return warp(images, self._family, theta, self.out_size, compute_dtype)


@register_distortion("E")
class Elastic(Distortion):
    """E: a thin-plate spline whose ``grid_size**2`` control points (a lattice spanning the image, as the ``tps``
    family) move by Gaussian noise: each output control point reads the input ``sigma``-jittered.

    ``params``: ``shift (n, K, 2)`` pixels, ``K = grid_size**2`` in the lattice's row-major order (x fastest).

    Args:
        sigma: standard deviation of the control-point shifts in pixels.
        grid_size: control points per side (4 gives the paper's 16).

    Example:
        >>> e = Elastic()
        >>> params = e.sample_params(torch.Generator().manual_seed(0), 2)
        >>> params["shift"].shape, e.apply(torch.rand(2, 1, 28, 28), params).shape
        (torch.Size([2, 16, 2]), torch.Size([2, 1, 28, 28]))
    """

    def __init__(self, sigma: float = 1.5, grid_size: int = 4):
        self.sigma = check_positive("sigma", sigma)
        self._family = get_transform("tps", grid_size=grid_size)
        self.grid_size = grid_size

    def options(self):
        return {"sigma": self.sigma, "grid_size": self.grid_size}

    def sample_params(self, generator, n):
        n = self.check_n(n)
        K = self.grid_size**2
        return {"shift": torch.randn((n, K, 2), generator=generator, dtype=_F64) * self.sigma}

    def theta(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``tps`` parameters ``(n, 2K)`` (float64): lattice positions plus the shifts in normalised units."""
        shift = params["shift"].to(_F64)  # (n, K, 2) px
        ctrl = lattice(self.grid_size, dtype=_F64)  # (K, 2)
        return (ctrl + shift * (2.0 / DIGIT)).reshape(shift.shape[0], -1)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        return warp(images, self._family, self.theta(params), self.out_size, compute_dtype)
