"""The paper's warp distortions: ``plain``, ``R``, ``RTS``, ``P`` and ``E`` (recipes in
:mod:`torchstn.data.distortions` and ``docs/datasets.md``). ``P`` and its candidate recipes live in
:mod:`~torchstn.data.distortions.projective` (re-exported here).

Every warp is a family of :mod:`torchstn.transforms` (``affine``, ``projective``, ``tps``) sampled bilinearly with
zero padding by :func:`torchstn.sample`. Positions are pixel coordinates of :mod:`torchstn.coords` (pixel centres at
integers, ``y`` down); a positive angle turns the digit counter-clockwise as displayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from torchstn._checks import look_up_option
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
from torchstn.data.distortions.projective import P_ZOOM_RANGE, ProjectiveJitter
from torchstn.data.distortions.registry import register_distortion
from torchstn.errors import OptionError
from torchstn.functional.tps import lattice
from torchstn.transforms import get_transform

__all__ = ["Plain", "Rotate", "RotateTranslateScale", "ProjectiveJitter", "Elastic", "E_RECIPES"]

_F64 = torch.float64
_DEG = 3.141592653589793 / 180.0


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


#: The E recipes: ``plain`` (the control-point jitter alone, the default) and ``zoom`` (P's zoom-out first).
E_RECIPES = ("plain", "zoom")
#: The zoom-out factor range of the ``zoom`` recipe: P's.
E_ZOOM_RANGE = P_ZOOM_RANGE


@register_distortion("E")
class Elastic(Distortion):
    """E: a thin-plate spline whose ``grid_size**2`` control points (a lattice spanning the image, as the ``tps``
    family) move by Gaussian noise: each output control point reads the input ``sigma``-jittered.

    The default spread, 2 px, is the one whose FCN and CNN E/R error ratios match the paper's; the 1.5 px of the
    public notes on the paper makes E easier than R for both (``docs/datasets.md``, "The E recipe").

    Whether the paper's E also zooms out first, as its P does, is not known (``docs/datasets.md``); the ``zoom``
    recipe does: each output control point reads the input at its lattice position divided by a scale uniform in
    :data:`E_ZOOM_RANGE`, plus the jitter, so the digit shrinks about the centre before the spline bends it.

    ``params``: ``scale (n,)`` first (``zoom`` only), then ``shift (n, K, 2)`` pixels, ``K = grid_size**2`` in the
    lattice's row-major order (x fastest).

    Args:
        sigma: standard deviation of the control-point shifts in pixels (2; 1.5 for the notes' reading).
        grid_size: control points per side (4 gives the paper's 16).
        recipe: ``"plain"`` (the default) or ``"zoom"``.

    Raises:
        OptionError: a bad option (an unknown ``recipe`` with a suggestion).

    Example:
        >>> e = Elastic()
        >>> params = e.sample_params(torch.Generator().manual_seed(0), 2)
        >>> params["shift"].shape, e.apply(torch.rand(2, 1, 28, 28), params).shape
        (torch.Size([2, 16, 2]), torch.Size([2, 1, 28, 28]))
        >>> sorted(Elastic(recipe="zoom").sample_params(torch.Generator().manual_seed(0), 2))
        ['scale', 'shift']
    """

    def __init__(self, sigma: float = 2.0, grid_size: int = 4, recipe: str = "plain"):
        self.sigma = check_positive("sigma", sigma)
        self._family = get_transform("tps", grid_size=grid_size)
        self.grid_size = grid_size
        self.recipe = look_up_option("recipe", recipe, E_RECIPES, error=OptionError)

    def options(self):
        return {"sigma": self.sigma, "grid_size": self.grid_size, "recipe": self.recipe}

    def sample_params(self, generator, n):
        n = self.check_n(n)
        K = self.grid_size**2
        scale = {"scale": uniform(generator, (n,), *E_ZOOM_RANGE)} if self.recipe == "zoom" else {}
        return {**scale, "shift": torch.randn((n, K, 2), generator=generator, dtype=_F64) * self.sigma}

    def theta(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``tps`` parameters ``(n, 2K)`` (float64): lattice positions (over the zoom's scale) plus the shifts in
        normalised units."""
        shift = params["shift"].to(_F64)  # (n, K, 2) px
        ctrl = lattice(self.grid_size, dtype=_F64)  # (K, 2)
        if "scale" in params:
            ctrl = ctrl / params["scale"].to(_F64).view(-1, 1, 1)  # (n, K, 2): the digit shrinks by the scale
        return (ctrl + shift * (2.0 / DIGIT)).reshape(shift.shape[0], -1)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        return warp(images, self._family, self.theta(params), self.out_size, compute_dtype)
