"""Distortions that put a digit on a larger canvas: translated + cluttered (TC, co-localisation) and 3D extrusion.

See :mod:`torchstn.data.distortions.distortion` for the ``sample_params`` | ``apply`` interface and the coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from torchstn._checks import look_up_option
from torchstn.data.distortions.distortion import (
    DIGIT,
    Distortion,
    check_angle,
    check_canvas,
    placement_centres,
    sin_cos,
    uniform,
    warp,
)
from torchstn.data.distortions.registry import register_distortion
from torchstn.data.distortions.slab import sample_slab
from torchstn.errors import DataError, OptionError
from torchstn.transforms import get_transform

__all__ = ["TranslateClutter", "Extrude3D", "COMBINES"]

_F64 = torch.float64
_DEG = 3.141592653589793 / 180.0
#: How clutter and digit are combined: pixelwise ``"max"`` or ``"sum"`` (clamped to 1).
COMBINES = ("max", "sum")


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _as_pool(pool: object) -> torch.Tensor:
    """Clutter pool as ``(M, 28, 28)``: uint8 (0..255) or float in [0, 1], kept as given (no copy)."""
    if not isinstance(pool, torch.Tensor):
        raise DataError(f"pool must be a tensor of digit images (M, 28, 28), got {type(pool).__name__}")
    if pool.dim() == 4 and pool.shape[1] == 1:
        pool = pool[:, 0]
    if pool.dim() != 3 or tuple(pool.shape[1:]) != (DIGIT, DIGIT) or pool.shape[0] < 2:
        raise DataError(f"pool must hold at least 2 digit images (M, 28, 28), got shape {tuple(pool.shape)}")
    if pool.dtype != torch.uint8 and not pool.is_floating_point():
        raise DataError(f"pool must be uint8 (0..255) or floating point (0..1), got {pool.dtype}")
    return pool


@register_distortion("TC")
class TranslateClutter(Distortion):
    """TC (and the co-localisation canvas): the 28x28 digit translated on a ``canvas`` plus clutter.

    The clutter is ``n_clutter`` crops of ``clutter_size`` x ``clutter_size`` pixels, each cut at a uniform integer
    position from a uniformly drawn digit of ``pool`` (excluding, if given, the digit itself) and pasted at a uniform
    integer position fully inside the canvas; crops, digit and canvas combine pixelwise by ``combine``.

    ``params`` (in draw order): ``centre (n, 2)`` the digit centre ``(x, y)`` in canvas pixels; ``clutter_index
    (n, k)`` int64 into ``pool``; ``clutter_crop (n, k, 2)`` int64 top-left ``(x, y)`` of each crop in its source
    digit; ``clutter_position (n, k, 2)`` int64 top-left ``(x, y)`` on the canvas. With ``subpixel=False`` the
    digit's top-left pixel is an integer, so the digit is copied exactly (bilinear sampling at pixel centres).

    Args:
        canvas: output side in pixels.
        n_clutter: clutter crops per image (0: translation only).
        clutter_size: side of a crop in pixels (at most 28).
        pool: digit images ``(M, 28, 28)`` (uint8 or float in [0, 1]) the crops come from; needed if ``n_clutter``.
        placement: ``"box"`` (the whole 28x28 digit stays on the canvas), ``"anywhere"`` or ``"centred"``.
        subpixel: continuous instead of integer digit positions.
        combine: ``"max"`` or ``"sum"`` (clamped to 1).

    Example:
        >>> pool = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
        >>> tc = TranslateClutter(pool=pool)
        >>> params = tc.sample_params(torch.Generator().manual_seed(0), 4)
        >>> params["clutter_index"].shape, tc.apply(torch.rand(4, 1, 28, 28), params).shape
        (torch.Size([4, 6]), torch.Size([4, 1, 60, 60]))
    """

    def __init__(
        self,
        canvas: int = 60,
        n_clutter: int = 6,
        clutter_size: int = 6,
        pool: torch.Tensor | None = None,
        placement: str = "box",
        subpixel: bool = False,
        combine: str = "max",
    ):
        self.canvas = check_canvas(canvas)
        self.n_clutter = _check_count("n_clutter", n_clutter)
        self.clutter_size = _check_count("clutter_size", clutter_size, 1)
        if self.clutter_size > min(DIGIT, self.canvas):
            raise OptionError(f"clutter_size must be at most {min(DIGIT, self.canvas)}, got {clutter_size}")
        self.pool = None if pool is None else _as_pool(pool)
        self.placement = self.check_placement(placement)
        self.subpixel = bool(subpixel)
        self.combine = look_up_option("combine", combine, COMBINES)
        self.out_size = (self.canvas, self.canvas)
        self._family = get_transform("affine")

    def options(self):
        return {
            "canvas": self.canvas,
            "n_clutter": self.n_clutter,
            "clutter_size": self.clutter_size,
            "placement": self.placement,
            "subpixel": self.subpixel,
            "combine": self.combine,
        }

    def _centres(self, generator, n: int) -> torch.Tensor:
        S, half = self.canvas, DIGIT / 2
        if self.subpixel or self.placement == "centred":
            return placement_centres(generator, n, S, torch.full((n,), half, dtype=_F64), self.placement)
        low, high = (0, S - DIGIT) if self.placement == "box" else (-DIGIT // 2, S - DIGIT // 2)
        if high < low:  # the digit cannot fit: centre it
            return torch.full((n, 2), (S - 1) / 2.0, dtype=_F64)
        top_left = torch.randint(low, high + 1, (n, 2), generator=generator)  # (n, 2) integer (x, y)
        return top_left.to(_F64) + (half - 0.5)

    def sample_params(self, generator, n, exclude: torch.Tensor | None = None):
        """Draw ``n`` parameter sets; ``exclude (n,)`` (optional) are pool indices each image must not use as clutter
        (its own digit)."""
        n = self.check_n(n)
        k, size = self.n_clutter, self.clutter_size
        params = {"centre": self._centres(generator, n)}
        if k and self.pool is None:
            raise OptionError("TranslateClutter needs pool= (digit images to cut clutter from) when n_clutter > 0")
        M = 0 if self.pool is None else self.pool.shape[0]
        if exclude is None:
            index = torch.randint(0, max(M, 1), (n, k), generator=generator)
        else:
            index = torch.randint(0, max(M - 1, 1), (n, k), generator=generator)  # skip the excluded index
            index = index + (index >= torch.as_tensor(exclude).view(n, 1)).long()
        params["clutter_index"] = index
        params["clutter_crop"] = torch.randint(0, DIGIT - size + 1, (n, k, 2), generator=generator)
        params["clutter_position"] = torch.randint(0, self.canvas - size + 1, (n, k, 2), generator=generator)
        return params

    def matrix(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised output->input translation matrices ``(n, 2, 3)`` (float64) placing the digit."""
        v = (2.0 * params["centre"].to(_F64) + 1.0) / self.canvas - 1.0  # (n, 2) normalised centre
        k = self.canvas / DIGIT
        one, zero = torch.full_like(v[:, 0], k), torch.zeros_like(v[:, 0])
        return torch.stack((one, zero, -k * v[:, 0], zero, one, -k * v[:, 1]), dim=1).view(-1, 2, 3)

    def clutter(self, params: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The clutter layer ``(n, 1, S, S)`` alone: crops pasted on zeros, overlaps combined by ``combine``."""
        index = params["clutter_index"]
        n, k = index.shape
        S, size = self.canvas, self.clutter_size
        canvas = torch.zeros(n, S * S, dtype=dtype)
        if k == 0:
            return canvas.view(n, 1, S, S)
        if self.pool is None:
            raise OptionError("these params hold clutter but this TranslateClutter has no pool= to cut it from")
        r = torch.arange(size)
        crop, pos = params["clutter_crop"], params["clutter_position"]  # (n, k, 2) each, (x, y)
        rows = (crop[..., 1, None] + r).view(n, k, size, 1)  # (n, k, size, 1) source rows
        cols = (crop[..., 0, None] + r).view(n, k, 1, size)  # (n, k, 1, size) source cols
        pieces = self.pool[index.view(n, k, 1, 1), rows, cols]  # (n, k, size, size)
        pieces = pieces.to(dtype) / 255.0 if self.pool.dtype == torch.uint8 else pieces.to(dtype)
        at = (pos[..., 1, None] + r).view(n, k, size, 1) * S + (pos[..., 0, None] + r).view(n, k, 1, size)
        reduce = "amax" if self.combine == "max" else "sum"
        canvas.scatter_reduce_(1, at.reshape(n, -1), pieces.reshape(n, -1), reduce=reduce)
        return canvas.view(n, 1, S, S)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        theta = self.matrix(params).reshape(-1, 6)  # (B, 6)
        digit = warp(images, self._family, theta, self.out_size, compute_dtype)  # (B, 1, S, S)
        if params["clutter_index"].shape[1] == 0:
            return digit
        clutter = self.clutter(params, images.dtype).to(images.device)
        if self.combine == "max":
            return torch.maximum(digit, clutter)
        return (digit + clutter).clamp_(0.0, 1.0)


def _rotation_transposed(angle_deg: torch.Tensor) -> list[list[torch.Tensor]]:
    """``R^T`` as nested lists of ``(n,)`` float64 tensors, ``R = Rz(gamma) Ry(beta) Rx(alpha)`` for angles
    ``(alpha, beta, gamma)`` about x, y, z; written out elementwise (no BLAS) so it is bit-reproducible."""
    sin, cos = sin_cos(angle_deg.to(_F64) * _DEG)  # (n, 3) each
    sa, sb, sg = sin.unbind(1)
    ca, cb, cg = cos.unbind(1)
    R = [  # Rz @ Ry @ Rx expanded
        [cg * cb, cg * sb * sa - sg * ca, cg * sb * ca + sg * sa],
        [sg * cb, sg * sb * sa + cg * ca, sg * sb * ca - cg * sa],
        [-sb, cb * sa, cb * ca],
    ]
    return [[R[j][i] for j in range(3)] for i in range(3)]


class Extrude3D(Distortion):
    """3D: the digit extruded ``depth`` voxels along z, optionally rotated in 3D, at a random place of a
    ``canvas^3`` volume ``(B, 1, D, H, W)``; sampled trilinearly with zero padding, only where the turned slab is
    (:func:`~torchstn.data.distortions.slab.sample_slab`: one bilinear read of the digit times a z weight per voxel).

    ``params`` (in draw order): ``angle (n, 3)`` degrees about x, y, z (uniform in ``+-max_angle``; not drawn and
    zero with ``rotate=False``) and ``centre (n, 3)`` the slab centre ``(x, y, z)`` in voxels. The slab is turned by
    ``R = Rz Ry Rx`` about its centre; ``placement="box"`` keeps the unrotated ``28 x 28 x depth`` box inside the
    volume (MNIST ink lies in the central 20x20, so modest angles do not cut it).

    Args:
        canvas: side of the volume in voxels.
        depth: extrusion depth in voxels.
        rotate: draw a random 3D rotation (else the slab is axis-aligned, facing the z axis).
        max_angle: angle range in degrees for each axis.
        placement: ``"box"``, ``"anywhere"`` or ``"centred"``.
        chunk: images sampled at once (bounds the sampler's working memory; the result does not depend on it).

    Example:
        >>> vol = Extrude3D(canvas=32, depth=4)
        >>> vol(torch.rand(2, 1, 28, 28), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 32, 32, 32])
    """

    name = "3D"

    def __init__(
        self,
        canvas: int = 60,
        depth: int = 14,
        rotate: bool = True,
        max_angle: float = 30.0,
        placement: str = "box",
        chunk: int = 256,
    ):
        self.canvas = check_canvas(canvas)
        self.depth = _check_count("depth", depth, 1)
        self.rotate = bool(rotate)
        self.max_angle = check_angle("max_angle", max_angle)
        self.placement = self.check_placement(placement)
        self.chunk = _check_count("chunk", chunk, 1)
        self.out_size = (self.canvas,) * 3

    def options(self):
        return {
            "canvas": self.canvas,
            "depth": self.depth,
            "rotate": self.rotate,
            "max_angle": self.max_angle,
            "placement": self.placement,
        }

    def sample_params(self, generator, n):
        n = self.check_n(n)
        if self.rotate:
            angle = uniform(generator, (n, 3), -self.max_angle, self.max_angle)  # (n, 3) degrees
        else:
            angle = torch.zeros(n, 3, dtype=_F64)
        half = torch.tensor([DIGIT / 2, DIGIT / 2, self.depth / 2], dtype=_F64).expand(n, 3)
        centre = placement_centres(generator, n, self.canvas, half, self.placement, ndim=3)  # (n, 3)
        return {"angle": angle, "centre": centre}

    def matrix(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised output->input matrices ``(n, 3, 4)`` (float64): ``u_in = D R^T (S / 2) (u_out - v)`` with
        ``D = diag(2/28, 2/28, 2/depth)`` and ``v`` the normalised centre."""
        Rt = _rotation_transposed(params["angle"])
        v = (2.0 * params["centre"].to(_F64) + 1.0) / self.canvas - 1.0  # (n, 3)
        inv_half = (2.0 / DIGIT, 2.0 / DIGIT, 2.0 / self.depth)
        rows = []
        for i in range(3):
            lin = [Rt[i][j] * (inv_half[i] * self.canvas / 2.0) for j in range(3)]  # (n,) each
            shift = -(lin[0] * v[:, 0] + lin[1] * v[:, 1] + lin[2] * v[:, 2])
            rows.append(torch.stack((*lin, shift), dim=1))  # (n, 4)
        return torch.stack(rows, dim=1)  # (n, 3, 4)

    def apply(self, images, params, *, compute_dtype=None):
        images = self.check_images(images, params)
        matrix = self.matrix(params).to(images.device)  # (B, 3, 4) float64
        return sample_slab(images, matrix, self.canvas, self.depth, compute_dtype, self.chunk)
