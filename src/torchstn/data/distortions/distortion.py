"""The distortion interface shared by the paper's MNIST distortions, and the helpers they build on.

A distortion is two steps (torchvision v2's ``_get_params`` / kernel split):

* ``sample_params(generator, n) -> params``: draws the random parameters of ``n`` distortions, in float64 on the CPU,
  from ``generator`` and in a documented order, so one generator state gives one set of parameters everywhere;
* ``apply(images, params) -> distorted``: deterministic and batched; ``images`` are ``(B, 1, 28, 28)`` floats in
  ``[0, 1]`` and the result is ``(B, *image_shape)`` in the same dtype, clamped to ``[0, 1]``.

``params`` is a ``dict`` of tensors whose first dimension is ``n``; :func:`select_params` indexes all of them at once.
Geometry is written in **pixel coordinates** of :mod:`torchstn.coords` (the centre of pixel ``(col, row)`` is at
``(x, y) = (col, row)``, ``y`` pointing down) and turned into the normalised output->input matrices that
:func:`torchstn.get_transform` families take.

**Bit reproducibility.** Parameters come from ``torch.rand`` / ``torch.randint`` / ``torch.randn`` on a CPU generator
in float64. Everything between the parameters and the sampling grid uses only ``+ - * /`` (correctly rounded, so the
same on every CPU); rotations use :func:`sin_cos`, a polynomial, instead of the platform's ``sin``/``cos``, whose last
bit differs between vectorised and scalar code paths. ``apply(..., compute_dtype=torch.float64)`` then samples in
float64, flushes residues below ``1e-10`` to zero and rounds once to float32, which hides any last-bit difference of
the sampler itself (checked under ``ATEN_CPU_CAPABILITY=default``, ``avx2`` and ``avx512``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

from torchstn._checks import check_float_tensor, look_up_option
from torchstn.errors import OptionError, ShapeError
from torchstn.functional import sample
from torchstn.transforms import TransformFamily

__all__ = ["Distortion", "select_params", "sin_cos", "uniform", "warp", "DIGIT", "PLACEMENTS"]

#: Side of an MNIST digit image in pixels.
DIGIT = 28
#: How a digit is placed on a canvas: ``"centred"`` (its centre at the canvas centre), ``"box"`` (uniform such that
#: the digit's scaled 28x28 box stays inside the canvas) or ``"anywhere"`` (its centre uniform over the canvas: the
#: digit may be cut at the border).
PLACEMENTS = ("centred", "box", "anywhere")

Params = dict[str, torch.Tensor]
_F64 = torch.float64
_FLUSH = 1e-10  # float64 results below this are set to 0 (see warp)
_SIN_COS_TERMS = 15  # Taylor terms; |x| <= pi leaves an error below 1e-18


def sin_cos(angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin, cos)`` of float64 angles in radians, ``|angle| <= pi``, bit-identical on every CPU.

    Evaluates the Taylor series in nested (Horner) form with one elementwise torch op per step, so every operation is
    a correctly rounded ``+ - * /`` and no platform ``sin``/``cos`` (or fused multiply-add) is involved.

    Args:
        angle: float64 tensor of any shape with values in ``[-pi, pi]``.

    Returns:
        ``(sin(angle), cos(angle))``, each the shape of ``angle``, accurate to about ``1e-16``.

    Example:
        >>> s, c = sin_cos(torch.tensor([0.0, math.pi / 6], dtype=torch.float64))
        >>> [round(v, 12) for v in s.tolist()], [round(v, 12) for v in c.tolist()]
        ([0.0, 0.5], [1.0, 0.866025403784])
    """
    x2 = angle * angle
    s = torch.ones_like(angle)
    c = torch.ones_like(angle)
    for k in range(_SIN_COS_TERMS, 0, -1):
        s = 1.0 - (x2 / float((2 * k) * (2 * k + 1))) * s  # 1 - x^2/((2k)(2k+1)) * (...)
        c = 1.0 - (x2 / float((2 * k - 1) * (2 * k))) * c
    return angle * s, c


def uniform(generator: torch.Generator | None, shape: Sequence[int], low, high) -> torch.Tensor:
    """Float64 samples uniform in ``[low, high)``; ``low``/``high`` are floats or tensors broadcasting to ``shape``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> u = uniform(g, (1000,), -45.0, 45.0)
        >>> bool(u.min() >= -45.0) and bool(u.max() < 45.0), u.dtype
        (True, torch.float64)
    """
    u = torch.rand(tuple(shape), generator=generator, dtype=_F64)
    return low + (high - low) * u


def select_params(params: Mapping[str, torch.Tensor], index) -> Params:
    """Index every tensor of ``params`` along its first dimension.

    Example:
        >>> p = {"angle": torch.arange(4.0), "centre": torch.zeros(4, 2)}
        >>> {k: tuple(v.shape) for k, v in select_params(p, torch.tensor([0, 2])).items()}
        {'angle': (2,), 'centre': (2, 2)}
    """
    return {key: value[index] for key, value in params.items()}


def warp(
    images: torch.Tensor,
    family: TransformFamily,
    theta: torch.Tensor,
    out_size: Sequence[int],
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Bilinear, zero-padded warp of ``images (B, C, *in)`` by ``family`` with ``theta (B, P)`` to ``out_size``.

    The grid is built and the images sampled in ``compute_dtype`` (default: the images' dtype); the result is cast
    back to the images' dtype and clamped to ``[0, 1]``.

    Example:
        >>> from torchstn import get_transform
        >>> x = torch.rand(2, 1, 4, 4)
        >>> theta = get_transform("affine").identity().expand(2, 6)
        >>> torch.allclose(warp(x, get_transform("affine"), theta, (4, 4)), x, atol=1e-6)
        True
    """
    work = compute_dtype or images.dtype
    theta = theta.to(device=images.device, dtype=work)
    grid = family.grid(theta, tuple(out_size), align_corners=False)  # (B, *out, n)
    out = sample(images.to(work), grid, mode="bilinear", padding_mode="zeros", check_finite=False)
    if work == torch.float64:
        # Where a grid point sits (almost) exactly on a pixel, the weight of its neighbour is 0 up to ~1e-16 and the
        # sign/size of that residue depends on the CPU's code path; such residues would survive the cast to float32
        # as tiny nonzero values. Flush them so the bytes agree everywhere (no visible value is this small).
        out = torch.where(out.abs() < _FLUSH, torch.zeros((), dtype=out.dtype, device=out.device), out)
    return out.to(images.dtype).clamp_(0.0, 1.0)


def check_angle(name: str, value: float) -> float:
    """A maximum angle in degrees, ``0 <= value <= 180``."""
    value = float(value)
    if not 0.0 <= value <= 180.0:
        raise OptionError(f"{name} must be in [0, 180] degrees, got {value}")
    return value


def check_positive(name: str, value: float, *, allow_zero: bool = True) -> float:
    value = float(value)
    if not (value >= 0.0 if allow_zero else value > 0.0) or not math.isfinite(value):
        raise OptionError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_canvas(value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"canvas must be an int >= {minimum} (pixels per side), got {value!r}")
    return value


def check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not 0.0 < low <= high or not math.isfinite(high):
        raise OptionError(f"{name} must satisfy 0 < low <= high, got {value!r}")
    return low, high


def placement_centres(
    generator: torch.Generator | None, n: int, canvas: int, half: torch.Tensor, placement: str, ndim: int = 2
) -> torch.Tensor:
    """Digit centres ``(n, ndim)`` in canvas pixel coordinates for a :data:`PLACEMENTS` rule.

    ``half (n,)`` or ``(n, ndim)`` is the half-size (in pixels) of the digit's box on the canvas; ``"box"`` keeps
    ``centre +- half`` inside the canvas edges ``[-0.5, canvas - 0.5]`` (centred when it cannot fit). Draws ``(n, ndim)``
    uniforms unless ``placement == "centred"``.
    """
    mid = (canvas - 1) / 2.0
    if placement == "centred":
        return torch.full((n, ndim), mid, dtype=_F64)
    if placement == "anywhere":
        return uniform(generator, (n, ndim), -0.5, canvas - 0.5)
    half = half.to(_F64).reshape(n, -1).expand(n, ndim)
    low, high = half - 0.5, (canvas - 0.5) - half
    fits = low <= high
    low = torch.where(fits, low, torch.full_like(low, mid))
    high = torch.where(fits, high, torch.full_like(high, mid))
    return uniform(generator, (n, ndim), low, high)


class Distortion:
    """Base class: a seeded random distortion of ``(B, 1, 28, 28)`` digit images (see the module docstring).

    Subclasses set ``name`` and ``out_size`` and implement :meth:`sample_params` and :meth:`apply`.
    """

    name: ClassVar[str] = ""
    #: Spatial size of the output, ``(H, W)`` or ``(D, H, W)``.
    out_size: tuple[int, ...] = (DIGIT, DIGIT)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` or ``(C, D, H, W)`` of one distorted sample."""
        return (1, *self.out_size)

    def sample_params(self, generator: torch.Generator | None, n: int) -> Params:
        """Draw the parameters of ``n`` distortions (float64, CPU) from ``generator`` (``None``: torch's default)."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: Mapping[str, torch.Tensor], *, compute_dtype=None) -> torch.Tensor:
        """Distort ``images (B, 1, 28, 28)`` with ``params`` (``B`` entries) -> ``(B, *image_shape)``."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``apply(images, sample_params(generator, B))``."""
        images = self.check_images(images)
        return self.apply(images, self.sample_params(generator, images.shape[0]))

    def options(self) -> dict[str, object]:
        """The constructor options (used in ``repr`` and as a cache key)."""
        return {}

    # -- checks shared by the subclasses ----------------------------------------------------------------------
    def check_n(self, n: object) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise OptionError(f"n must be an int >= 0, got {n!r}")
        return n

    def check_images(self, images: object, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Require float ``(B, 1, 28, 28)`` images (and ``B`` parameters, if given)."""
        images = check_float_tensor("images", images)
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, DIGIT, DIGIT):
            raise ShapeError(f"images must be (B, 1, {DIGIT}, {DIGIT}) floats in [0, 1], got {tuple(images.shape)}")
        if params is not None:
            for key, value in params.items():
                if value.shape[0] != images.shape[0]:
                    raise ShapeError(f"params[{key!r}] holds {value.shape[0]} distortions for {images.shape[0]} images")
        return images

    def check_placement(self, placement: str) -> str:
        return look_up_option("placement", placement, PLACEMENTS)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({args})"
