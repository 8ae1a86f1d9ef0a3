"""P, the projective distortion, with its candidate recipes, and the geometry check that compares them.

The paper's P recipe is known only in outline (a zoom-out by a scale uniform in [0.75, 1.0], then a Gaussian
perturbation of the corners with 5 as the spread); the direction of the corner moves, their units and the canvas are
unknown (``docs/datasets.md``, after the project's P-recipe report of 2026-12, §1.2). :class:`ProjectiveJitter` therefore
offers the candidate readings as named ``recipe`` options, all drawing the ``scale`` first, each with its own default
``sigma`` (:data:`P_SIGMA`):

==========  ===========================================================================================================
recipe      the corner moves (output side)
==========  ===========================================================================================================
``radial``  each image corner moves along its own diagonal (away from the centre for a positive draw) by a signed
            N(0, sigma^2) px distance (28x28, sigma 6.5 px; the default from issue 17's first choice until its
            squashed tail was found)
``ours``    each image corner moves by N(0, sigma^2) px in x and, independently, in y (28x28, sigma 5; P until
            issue 17, far harder than the paper's P)
``stretch`` an outward stretch: one ``|N(0, sigma^2)|`` draw per image, ``pad = round(draw * sqrt(2) / 2)`` px (the
            x and y parts of a move of ``draw`` along the diagonal), pads the zoomed 28x28 frame by ``pad`` px on each
            side (every frame corner moves outward along its diagonal) and resizes the result to 42x42 (the recipe
            of a public MATLAB reimplementation, "MNIST_P", as the report describes it; the frame is zoomed in
            place, not resized, which the report leaves open)
``padded``  ``ours`` applied to the corners of a 42x42 canvas with the digit centred on it (42x42)
``legible`` ``radial``, redrawing every draw whose warp squeezes some part of the digit's central 20x20 box to less
            than :data:`LEGIBLE_SQUASH` of its size in some direction (:func:`squash`): the radial tail that
            collapses a digit to a line or a speck, which no reader can classify (28x28; **the default**, sigma
            15 px: of the measured recipes, the one whose FCN and CNN P/R error ratios come closest to the paper's,
            ``docs/datasets.md``)
==========  ===========================================================================================================

:func:`ink_inside` / :func:`ink_loss_rate` are the report's geometry-only check: how much of the digit's central
20x20 ink box stays inside the output frame, per draw; :func:`squash` is the other way a draw loses a digit, by
squeezing it flat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from torchstn._checks import look_up_option
from torchstn.data.distortions.distortion import (
    DIGIT,
    Distortion,
    check_positive,
    check_range,
    uniform,
    warp,
)
from torchstn.data.distortions.registry import register_distortion
from torchstn.errors import OptionError
from torchstn.transforms import get_transform

__all__ = ["ProjectiveJitter", "P_RECIPES", "P_SIGMA", "LEGIBLE_SQUASH", "ink_inside", "ink_loss_rate", "squash"]

_F64 = torch.float64
_MAX_REDRAWS = 64
#: The candidate P recipes (see the module docstring); ``"legible"`` is the default.
P_RECIPES = ("radial", "ours", "stretch", "padded", "legible")
#: The zoom-out factor range every P recipe draws first (``scale_range``'s default).
P_ZOOM_RANGE = (0.75, 1.0)
#: Each recipe's default ``sigma`` (px): ``legible``'s and ``radial``'s chosen by the P/R evidence, the others' the
#: spec's 5.
P_SIGMA = {"radial": 6.5, "ours": 5.0, "stretch": 5.0, "padded": 5.0, "legible": 15.0}
#: ``legible``'s bound on :func:`squash`: no part of the central 20x20 box squeezed to under this (a 20 px stroke run
#: to under 3 px), below which the ST-CNN's error on the radial P test set rises steeply (``docs/datasets.md``).
LEGIBLE_SQUASH = 0.15
#: The ink box MNIST centres its digits in (px), whose squeeze :func:`squash` measures.
_INK = 20
#: Output side of the recipes that leave the 28x28 frame.
_WIDE = 42
#: Side (px) of the frame whose corners each recipe moves, and the output side.
_FRAME = {"ours": DIGIT, "radial": DIGIT, "stretch": DIGIT, "padded": _WIDE, "legible": DIGIT}
_OUT = {"ours": DIGIT, "radial": DIGIT, "stretch": _WIDE, "padded": _WIDE, "legible": DIGIT}


def _is_convex(corners: torch.Tensor) -> torch.Tensor:
    """Whether the quads ``(n, 4, 2)`` (corners TL, TR, BL, BR) are convex and not folded -> ``(n,)`` bool."""
    ring = corners[:, [0, 1, 3, 2]]  # (n, 4, 2) in order around the quad
    edge = ring.roll(-1, dims=1) - ring  # (n, 4, 2)
    nxt = edge.roll(-1, dims=1)
    cross = edge[..., 0] * nxt[..., 1] - edge[..., 1] * nxt[..., 0]  # (n, 4) turn at each corner
    return (cross > 0).all(dim=1) | (cross < 0).all(dim=1)


@register_distortion("P")
class ProjectiveJitter(Distortion):
    """P: zoom out by ``scale``, then move the corners of the frame by a ``recipe``; warp by the homography through
    the four point pairs.

    ``params``: ``scale (n,)`` first, then ``corner_shift (n, 4, 2)`` in pixels (``ours``, ``radial``, ``padded``:
    the frame corners in the order top-left, top-right, bottom-left, bottom-right, each ``(dx, dy)``) or ``pad (n,)``
    integer pixels (``stretch``). The frame corner ``c_k`` (the image's for a 28x28 frame, the canvas's for
    ``padded``) lands at ``scale * c_k + shift_k`` about the centre; the output->input homography maps those four
    points back to ``c_k`` and is solved per sample from the 8x8 DLT system in float64 (``torch.linalg.solve``).

    With ``sigma=5`` about 1.4% of the ``ours`` draws give a folded (non-convex) quad, whose homography sends part of
    the image past its horizon; with ``convex_only`` (the default) those samples redraw their shifts (batched rounds
    from the same generator; after 64 rounds a sample keeps zero shifts). ``stretch`` never folds.

    Args:
        scale_range: ``(low, high)`` of the uniform zoom-out factor.
        sigma: standard deviation of the corner moves in pixels; ``None`` for the recipe's own (:data:`P_SIGMA`).
        convex_only: redraw shifts that fold the quad.
        recipe: ``"legible"`` (the default), ``"radial"``, ``"ours"``, ``"stretch"`` or ``"padded"`` (module
            docstring); ``stretch`` and ``padded`` give 42x42 images. ``legible`` always redraws folded quads.

    Raises:
        OptionError: a bad option (an unknown ``recipe`` with a suggestion).

    Example:
        >>> p = ProjectiveJitter()
        >>> params = p.sample_params(torch.Generator().manual_seed(0), 2)
        >>> p.matrix(params).shape, p.apply(torch.rand(2, 1, 28, 28), params).shape
        (torch.Size([2, 3, 3]), torch.Size([2, 1, 28, 28]))
        >>> ProjectiveJitter(recipe="stretch").image_shape
        (1, 42, 42)
    """

    #: Frame corners ``(4, 2)`` in normalised coordinates (the frame's outer edges, ``align_corners=False``).
    CORNERS = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))

    def __init__(
        self,
        scale_range: Sequence[float] = P_ZOOM_RANGE,
        sigma: float | None = None,
        convex_only: bool = True,
        recipe: str = "legible",
    ):
        self.scale_range = check_range("scale_range", scale_range)
        self.recipe = look_up_option("recipe", recipe, P_RECIPES, error=OptionError)
        self.sigma = check_positive("sigma", P_SIGMA[self.recipe] if sigma is None else sigma)
        self.convex_only = bool(convex_only)
        self.out_size = (_OUT[self.recipe], _OUT[self.recipe])
        self._frame = _FRAME[self.recipe]
        self._family = get_transform("projective")

    def options(self):
        return {
            "scale_range": self.scale_range,
            "sigma": self.sigma,
            "convex_only": self.convex_only,
            "recipe": self.recipe,
        }

    def moved_corners(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Where the frame corners land, ``(n, 4, 2)`` in the output's normalised coordinates (float64)."""
        src = torch.tensor(self.CORNERS, dtype=_F64)  # (4, 2)
        scale = params["scale"].to(_F64).view(-1, 1, 1)  # (n, 1, 1)
        if self.recipe == "stretch":  # the zoomed 28-px frame, padded by `pad` px a side, fills the output
            half = DIGIT / 2
            return scale * src * (half / (half + params["pad"].to(_F64).view(-1, 1, 1)))
        return scale * src + params["corner_shift"].to(_F64) * (2.0 / self._frame)

    def _draw_shift(self, generator: torch.Generator | None, m: int) -> torch.Tensor:
        """``m`` sets of corner shifts ``(m, 4, 2)`` px (the ``corner_shift`` recipes)."""
        if self.recipe in ("radial", "legible"):
            outward = torch.tensor(self.CORNERS, dtype=_F64) * math.sqrt(0.5)  # (4, 2) unit diagonals
            distance = torch.randn((m, 4), generator=generator, dtype=_F64) * self.sigma  # (m, 4) px
            return distance.unsqueeze(-1) * outward
        return torch.randn((m, 4, 2), generator=generator, dtype=_F64) * self.sigma

    def sample_params(self, generator, n):
        n = self.check_n(n)
        scale = uniform(generator, (n,), *self.scale_range)  # (n,)
        if self.recipe == "stretch":
            draw = (torch.randn((n,), generator=generator, dtype=_F64) * self.sigma).abs()  # (n,) px
            return {"scale": scale, "pad": torch.round(draw * (math.sqrt(2.0) / 2.0))}
        shift = self._draw_shift(generator, n)  # (n, 4, 2) px
        params = {"scale": scale, "corner_shift": shift}
        redraw = self.convex_only or self.recipe == "legible"
        for _ in range(_MAX_REDRAWS if redraw else 0):  # rounds over the whole batch, not images
            bad = self._unusable(params)  # (n,)
            if not bool(bad.any()):
                break
            shift[bad] = self._draw_shift(generator, int(bad.sum()))
        else:
            if redraw:
                shift[self._unusable(params)] = 0.0
        return params

    def _unusable(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The draws to redraw ``(n,)``: folded quads (with ``convex_only``), and for ``legible`` the draws that
        squeeze the ink box below :data:`LEGIBLE_SQUASH` (a folded quad is never legible)."""
        corners = self.moved_corners(params)
        folded = ~_is_convex(corners)
        bad = folded if self.convex_only else torch.zeros_like(folded)
        if self.recipe == "legible":
            bad = bad | folded | (_corner_squash(corners) < LEGIBLE_SQUASH)
        return bad

    def matrix(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised output->input homographies ``(n, 3, 3)`` (float64, ``h33 = 1``), input being the 28x28 digit."""
        dst = self.moved_corners(params)  # (n, 4, 2) output points
        n = dst.shape[0]
        src = torch.tensor(self.CORNERS, dtype=_F64).expand(n, 4, 2)  # (n, 4, 2) frame corners
        dx, dy, cx, cy = dst[..., 0], dst[..., 1], src[..., 0], src[..., 1]  # (n, 4) each
        one, zero = torch.ones_like(dx), torch.zeros_like(dx)
        rows_x = torch.stack((dx, dy, one, zero, zero, zero, -cx * dx, -cx * dy), dim=-1)  # (n, 4, 8)
        rows_y = torch.stack((zero, zero, zero, dx, dy, one, -cy * dx, -cy * dy), dim=-1)  # (n, 4, 8)
        system = torch.stack((rows_x, rows_y), dim=2).view(n, 8, 8)  # rows x0, y0, x1, y1, ...
        rhs = torch.stack((cx, cy), dim=2).view(n, 8, 1)
        h = torch.linalg.solve(system, rhs).view(n, 8)  # (n, 8)
        if self._frame != DIGIT:  # frame-normalised -> digit-normalised input: x, y rows times frame / 28
            h = h * torch.tensor([self._frame / DIGIT] * 6 + [1.0, 1.0], dtype=_F64)
        return torch.cat((h, h.new_ones(n, 1)), dim=1).view(n, 3, 3)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        theta = self.matrix(params).reshape(-1, 9)[:, :8]  # (B, 8)
        return warp(images, self._family, theta, self.out_size, compute_dtype)


def _corner_squash(corners: torch.Tensor, ink: int = _INK, points: int = 5) -> torch.Tensor:
    """:func:`squash` from the moved frame corners ``(n, 4, 2)`` (a 28x28 frame, non-folded quads), with ``+ - * /``
    and ``sqrt`` only, so that the draws it redraws are the same on every machine (no LAPACK, unlike
    :meth:`ProjectiveJitter.matrix`).

    The digit->output homography is the unit square->quad map in closed form (Heckbert, "Fundamentals of Texture
    Mapping and Image Warping", 1989, §2.2.3), the unit square being the frame: ``u = (x + 1) / 2``. Its Jacobian's
    smaller singular value is taken in closed form on ``points x points`` points spanning the ink box.
    """
    x0, y0 = corners[:, 0, 0], corners[:, 0, 1]  # (n,) top-left: (u, v) = (0, 0)
    x1, y1 = corners[:, 1, 0], corners[:, 1, 1]  # top-right: (1, 0)
    x2, y2 = corners[:, 3, 0], corners[:, 3, 1]  # bottom-right: (1, 1)
    x3, y3 = corners[:, 2, 0], corners[:, 2, 1]  # bottom-left: (0, 1)
    dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
    dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
    det = dx1 * dy2 - dx2 * dy1
    g, h = (dx3 * dy2 - dx2 * dy3) / det, (dx1 * dy3 - dx3 * dy1) / det  # (n,) zero for a parallelogram
    a, b, c = x1 - x0 + g * x1, x3 - x0 + h * x3, x0
    d, e, f = y1 - y0 + g * y1, y3 - y0 + h * y3, y0
    half = ink / DIGIT  # the ink box's half side, digit-normalised
    t = (torch.arange(points, dtype=_F64) * (2.0 * half / (points - 1)) - half + 1.0) / 2.0  # (p,) in u units
    u, v = t.view(1, 1, -1), t.view(1, -1, 1)  # (1, 1, p), (1, p, 1)
    a, b, c, d, e, f, g, h = (z.view(-1, 1, 1) for z in (a, b, c, d, e, f, g, h))  # (n, 1, 1)
    w = g * u + h * v + 1.0  # (n, p, p)
    X, Y = a * u + b * v + c, d * u + e * v + f
    # d(output)/d(digit-normalised) = d(output)/d(u, v) / 2: output and digit are both normalised over 28 px
    p_, q_ = (a * w - X * g) / (2.0 * w * w), (b * w - X * h) / (2.0 * w * w)  # dx/dx', dx/dy'
    r_, s_ = (d * w - Y * g) / (2.0 * w * w), (e * w - Y * h) / (2.0 * w * w)  # dy/dx', dy/dy'
    big = ((p_ + s_) * (p_ + s_) + (r_ - q_) * (r_ - q_)).sqrt() / 2.0  # the 2x2 singular values: big +- small
    small = ((p_ - s_) * (p_ - s_) + (r_ + q_) * (r_ + q_)).sqrt() / 2.0
    return (big - small).abs().flatten(1).min(dim=1).values  # (n,)


def squash(distortion: ProjectiveJitter, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """How flat a draw squeezes the digit: the smallest stretch, in any direction, at any point of the digit's central
    20x20 ink box, of the digit->output map (output pixels per digit pixel) -> ``(n,)`` float64.

    1 for the identity, the zoom-out factor for a pure zoom; near 0 where the warp collapses part of the digit onto a
    line (a corner pulled far inwards), which :data:`LEGIBLE_SQUASH` bounds for the ``legible`` recipe. Sampled on
    a 5x5 grid of the box. For a 28x28 frame (``radial``, ``ours``, ``legible``) and non-folded draws.

    Raises:
        OptionError: ``distortion`` is not a :class:`ProjectiveJitter` with a 28x28 frame.

    Example:
        >>> p = ProjectiveJitter(scale_range=(0.8, 0.8), sigma=0.0)
        >>> [round(s, 6) for s in squash(p, p.sample_params(None, 2)).tolist()]
        [0.8, 0.8]
    """
    if not isinstance(distortion, ProjectiveJitter) or distortion.recipe not in ("radial", "ours", "legible"):
        raise OptionError(
            "squash measures a ProjectiveJitter with a 28x28 frame (recipe 'radial', 'ours' or 'legible'), got "
            + (
                f"recipe {distortion.recipe!r}"
                if isinstance(distortion, ProjectiveJitter)
                else type(distortion).__name__
            )
        )
    return _corner_squash(distortion.moved_corners(params))


def _shoelace(points: torch.Tensor) -> torch.Tensor:
    """Areas ``(n,)`` of the polygons ``(n, k, 2)`` whose vertices go around in order."""
    x, y = points[..., 0], points[..., 1]  # (n, k)
    return 0.5 * (x * y.roll(-1, dims=1) - x.roll(-1, dims=1) * y).sum(dim=1).abs()


def ink_inside(
    distortion: ProjectiveJitter, params: Mapping[str, torch.Tensor], *, ink: int = 20, per_pixel: int = 4
) -> torch.Tensor:
    """The fraction of the warped ink box that lies inside the output frame, per draw -> ``(n,)`` float64.

    The ink box is the digit's central ``ink x ink`` pixels (MNIST centres its digits in a 20x20 box). Its image
    under the forward homography is a quad (convex for a non-folded draw) whose area comes from its corners; the
    part inside the frame is counted on ``per_pixel x per_pixel`` points per output pixel, each mapped back to the
    digit. Geometry only: the digit's own strokes play no part. Meaningful for non-folded draws (``convex_only``).

    Raises:
        OptionError: ``distortion`` is not a :class:`ProjectiveJitter` or ``ink`` is not in 1..28.

    Example:
        >>> p = ProjectiveJitter(scale_range=(1.0, 1.0), sigma=0.0)
        >>> ink_inside(p, p.sample_params(None, 2)).tolist()
        [1.0, 1.0]
    """
    if not isinstance(distortion, ProjectiveJitter):
        raise OptionError(f"distortion must be a ProjectiveJitter (P), got {type(distortion).__name__}")
    if isinstance(ink, bool) or not isinstance(ink, int) or not 1 <= ink <= DIGIT:
        raise OptionError(f"ink must be an int in 1..{DIGIT} (pixels), got {ink!r}")
    h = distortion.matrix(params)  # (n, 3, 3) output -> digit, normalised
    half = ink / DIGIT  # the ink box's half side, digit-normalised
    box = torch.tensor([[-half, -half, 1.0], [half, -half, 1.0], [half, half, 1.0], [-half, half, 1.0]], dtype=_F64)
    fwd = torch.linalg.inv(h) @ box.T  # (n, 3, 4) homogeneous output points of the box corners
    area = _shoelace((fwd[:, :2] / fwd[:, 2:]).transpose(1, 2))  # (n,) output-normalised units
    side = per_pixel * distortion.out_size[0]
    axis = (torch.arange(side, dtype=_F64) + 0.5) * (2.0 / side) - 1.0  # (side,) point centres in [-1, 1]
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack((xs.flatten(), ys.flatten(), torch.ones(side * side, dtype=_F64)))  # (3, side^2)
    inside = []
    for chunk in h.split(64):  # (c, 3, 3): bounds the (c, 3, side^2) intermediate
        back = chunk @ grid  # (c, 3, side^2) homogeneous digit points
        u, v = back[:, 0] / back[:, 2], back[:, 1] / back[:, 2]
        hit = (back[:, 2] > 0) & (u.abs() <= half) & (v.abs() <= half)
        inside.append(hit.sum(dim=1).to(_F64) * (2.0 / side) ** 2)
    if not inside:
        return area
    return (torch.cat(inside) / area).clamp(max=1.0)


def ink_loss_rate(
    distortion: ProjectiveJitter, n: int, generator: torch.Generator | None = None, threshold: float = 0.9
) -> float:
    """The share of ``n`` draws of ``distortion`` whose ink box keeps less than ``threshold`` of its area inside the
    output frame (:func:`ink_inside`): the report's geometry-only measure of how many digits a P recipe cuts.

    Raises:
        OptionError: ``n`` not an int >= 1, ``threshold`` not in (0, 1], or a bad ``distortion``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> ink_loss_rate(ProjectiveJitter(recipe="stretch"), 200, g)
        0.0
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(f"n must be an int >= 1, got {n!r}")
    if not 0.0 < float(threshold) <= 1.0:
        raise OptionError(f"threshold must be in (0, 1], got {threshold!r}")
    fractions = ink_inside(distortion, distortion.sample_params(generator, n))  # (n,)
    return float((fractions < threshold).to(_F64).mean())
