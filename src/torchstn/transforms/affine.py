"""Matrix families: affine, attention, similarity, translation, fixed_scale_translation (2D) and affine3d,
attention3d, translation3d."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchstn.errors import OptionError
from torchstn.functional.affine import affine_grid, transform_points_affine
from torchstn.functional.antialias import affine_jacobian
from torchstn.transforms.base import TransformFamily, register_transform

__all__ = [
    "MatrixFamily",
    "Affine",
    "Attention",
    "Similarity",
    "Translation",
    "FixedScaleTranslation",
    "Affine3D",
    "Attention3D",
    "Translation3D",
]


class MatrixFamily(TransformFamily):
    """A family whose transform is an affine matrix ``(B, n, n+1)``; the grid comes from the fast affine grid."""

    def grid(self, theta: torch.Tensor, out_size: Sequence[int] | int, *, align_corners: bool = False) -> torch.Tensor:
        size = self.check_out_size(out_size)
        return affine_grid(self.matrix(self.check_theta(theta, finite=False)), size, align_corners)

    def transform_points(self, theta: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        theta = self.check_theta(theta, finite=False)
        return transform_points_affine(self.matrix(theta), self.check_points(points, theta.shape[0]))

    def footprint(self, theta, in_size, out_size, *, align_corners=False):
        """One footprint per sample: an affine map's Jacobian is constant over the image.

        Example:
            >>> Affine().footprint(torch.tensor([[2.0, 0, 0, 0, 2.0, 0]]), (16, 16), (8, 8))  # 4x zoom-out
            tensor([[[4., 0.],
                     [0., 4.]]])
        """
        return affine_jacobian(self.matrix(theta), in_size, out_size, align_corners)


def _new(values: Sequence[float], dtype, device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype or torch.get_default_dtype(), device=device)


def _shifted_identity(family: TransformFamily, shift, dtype, device) -> torch.Tensor:
    """A general affine family's identity ``(n (n+1),)`` with ``shift`` added to its translation column."""
    t = family.check_shift(shift, dtype, device)
    n = t.shape[0]
    m = family.identity(dtype=t.dtype, device=t.device).view(n, n + 1).clone()
    m[:, n] += t
    return m.reshape(-1)


def _scaled_eye(theta_scale: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``[[s, 0, tx], [0, s, ty](, [.., tz])]`` from scale ``(B,)`` and translation ``(B, n)`` -> ``(B, n, n+1)``."""
    B, n = translation.shape
    eye = torch.eye(n, dtype=translation.dtype, device=translation.device)
    lin = theta_scale.view(B, 1, 1) * eye  # (B, n, n)
    return torch.cat((lin, translation.unsqueeze(-1)), dim=-1)


@register_transform("affine")
class Affine(MatrixFamily):
    """General 2D affine map; ``theta (B, 6)`` is the row-major ``2x3`` matrix that ``F.affine_grid`` takes.

    Example:
        >>> fam = Affine()
        >>> fam.matrix(fam.identity().unsqueeze(0))
        tensor([[[1., 0., 0.],
                 [0., 1., 0.]]])
    """

    ranks = (2,)

    def identity(self, *, dtype=None, device=None):
        return _new([1, 0, 0, 0, 1, 0], dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        return _shifted_identity(self, shift, dtype, device)

    def matrix(self, theta):
        return theta.view(-1, 2, 3)


@register_transform("attention")
class Attention(MatrixFamily):
    """Isotropic scale and translation, ``theta = (s, tx, ty)`` -> ``[[s, 0, tx], [0, s, ty]]`` (the paper's
    attention transform: ``s < 1`` zooms in on a window of half-size ``s`` centred at ``(tx, ty)``)."""

    ranks = (2,)

    def identity(self, *, dtype=None, device=None):
        return _new([1, 0, 0], dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        t = self.check_shift(shift, dtype, device)
        return torch.cat((t.new_ones(1), t))

    def matrix(self, theta):
        return _scaled_eye(theta[:, 0], theta[:, 1:])


@register_transform("translation")
class Translation(MatrixFamily):
    """Pure translation ``theta = (tx, ty)`` in normalised units (``tx = 2 / W`` reads one pixel to the right)."""

    ranks = (2,)

    def identity(self, *, dtype=None, device=None):
        return _new([0, 0], dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        return self.check_shift(shift, dtype, device)

    def matrix(self, theta):
        return _scaled_eye(torch.ones_like(theta[:, 0]), theta)


@register_transform("similarity")
class Similarity(MatrixFamily):
    """Rotation, isotropic scale and translation, ``theta = (angle, log_scale, tx, ty)``.

    The output point ``p`` reads the input at ``exp(log_scale) * R(angle) @ p + t`` with
    ``R = [[cos, -sin], [sin, cos]]`` (radians): rotation and scale act about the image centre, then the
    translation. With y pointing down, a positive ``angle`` turns the **output picture counter-clockwise on
    screen** (at +90° a dot right of the centre shows up above it): ``R`` turns the sampling points clockwise on
    screen, and the content they read turns the other way. Scale is ``exp(log_scale)`` so it stays positive for
    any network output; the identity is all zeros.

    Example:
        >>> import math
        >>> from torchstn.functional.sample import sample
        >>> x = torch.zeros(1, 1, 9, 9)
        >>> x[0, 0, 4, 7] = 1.0  # a dot right of the centre (row 4, column 7)
        >>> v = sample(x, Similarity().grid(torch.tensor([[math.pi / 2, 0.0, 0.0, 0.0]]), (9, 9)))
        >>> divmod(int(v.flatten().argmax()), 9)  # (row, column): now above the centre
        (1, 4)
    """

    ranks = (2,)

    def identity(self, *, dtype=None, device=None):
        return _new([0, 0, 0, 0], dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        t = self.check_shift(shift, dtype, device)
        return torch.cat((t.new_zeros(2), t))

    def matrix(self, theta):
        angle, scale = theta[:, 0], theta[:, 1].exp()
        c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
        row0 = torch.stack((c, -s, theta[:, 2]), dim=-1)
        row1 = torch.stack((s, c, theta[:, 3]), dim=-1)
        return torch.stack((row0, row1), dim=1)  # (B, 2, 3)


@register_transform("fixed_scale_translation")
class FixedScaleTranslation(MatrixFamily):
    """Attention with a fixed scale: ``theta = (tx, ty)`` -> ``[[s, 0, tx], [0, s, ty]]``, a window of half-size
    ``s`` (normalised units) centred at ``(tx, ty)`` (the paper's CUB part detectors). Its "identity" (the regression
    head's starting bias) is the window's start ``centre``; with the defaults (``scale=1``, ``centre=(0, 0)``) it is
    the identity map.

    Args:
        scale: the window's half-size ``s``, in ``(0, 1]``.
        centre: ``(x, y)`` where the window starts.

    Example:
        >>> fam = FixedScaleTranslation(0.5, (0.5, -0.5))
        >>> fam.matrix(fam.identity().unsqueeze(0))
        tensor([[[ 0.5000,  0.0000,  0.5000],
                 [ 0.0000,  0.5000, -0.5000]]])
    """

    ranks = (2,)

    def __init__(self, scale: float = 1.0, centre: Sequence[float] = (0.0, 0.0)):
        if not 0.0 < float(scale) <= 1.0 or len(centre) != 2:
            raise OptionError(f"scale must be in (0, 1] and centre two numbers, got {scale!r}, {centre!r}")
        self.scale, self.centre = float(scale), (float(centre[0]), float(centre[1]))

    def identity(self, *, dtype=None, device=None):
        return _new(self.centre, dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        if self.scale != 1.0:
            raise OptionError(f"a window of fixed scale {self.scale} is no pure translation; only scale=1 is")
        return self.check_shift(shift, dtype, device)

    def matrix(self, theta):
        return _scaled_eye(torch.full_like(theta[:, 0], self.scale), theta)  # (B, 2, 3)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, centre={self.centre}"


@register_transform("affine3d")
class Affine3D(MatrixFamily):
    """General 3D affine map for volumes ``(B, C, D, H, W)``; ``theta (B, 12)`` is the row-major ``3x4`` matrix
    acting on ``(x, y, z, 1)``."""

    ranks = (3,)

    def identity(self, *, dtype=None, device=None):
        return _new([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        return _shifted_identity(self, shift, dtype, device)

    def matrix(self, theta):
        return theta.view(-1, 3, 4)


@register_transform("attention3d")
class Attention3D(MatrixFamily):
    """3D isotropic scale and translation, ``theta = (s, tx, ty, tz)``."""

    ranks = (3,)

    def identity(self, *, dtype=None, device=None):
        return _new([1, 0, 0, 0], dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        t = self.check_shift(shift, dtype, device)
        return torch.cat((t.new_ones(1), t))

    def matrix(self, theta):
        return _scaled_eye(theta[:, 0], theta[:, 1:])


@register_transform("translation3d")
class Translation3D(MatrixFamily):
    """3D translation ``theta = (tx, ty, tz)``."""

    ranks = (3,)

    def identity(self, *, dtype=None, device=None):
        return _new([0, 0, 0], dtype, device)

    def translation(self, shift, *, dtype=None, device=None):
        return self.check_shift(shift, dtype, device)

    def matrix(self, theta):
        return _scaled_eye(torch.ones_like(theta[:, 0]), theta)
