"""THE coordinate convention of torchstn, written once. See ``docs/conventions.md``.

* Spatial positions are **normalised** to ``[-1, 1]`` per axis: ``-1`` is the left/top/front edge, ``+1`` the
  right/bottom/back edge of the image.
* ``align_corners=False`` (the default everywhere): ``-1`` and ``+1`` are the *outer edges* of the border pixels, so
  pixel ``i`` of an axis with ``n`` pixels has its centre at ``(2 i + 1) / n - 1``.
  ``align_corners=True``: ``-1`` and ``+1`` are the *centres* of the border pixels: ``2 i / (n - 1) - 1`` (``0`` when
  ``n == 1``). Both match :func:`torch.nn.functional.grid_sample`.
* The last dimension of a grid holds ``(x, y)`` in 2D and ``(x, y, z)`` in 3D: ``x`` indexes width (the last tensor
  dim), ``y`` height, ``z`` depth. Tensors are ``(B, C, H, W)`` / ``(B, C, D, H, W)``.
* A transform maps **output -> input** (backward warping, as in the paper): a grid holds, for every output pixel, the
  input position it reads.
* Pixel coordinates (OpenCV/kornia style) put the centre of pixel ``(col, row)`` at ``(x, y) = (col, row)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchstn._checks import check_size, look_up_option
from torchstn.errors import DTypeError, ShapeError

__all__ = [
    "linspace_coords",
    "axis_scale_shift",
    "identity_grid",
    "pixel_from_normalised",
    "normalised_from_pixel",
    "to_homogeneous",
    "matrix_to_pixel",
    "matrix_from_pixel",
    "grid_to_displacement",
    "displacement_to_grid",
]


def linspace_coords(
    n: int, align_corners: bool = False, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Normalised coordinates of the ``n`` pixel centres along one axis.

    Example:
        >>> linspace_coords(4)
        tensor([-0.7500, -0.2500,  0.2500,  0.7500])
        >>> linspace_coords(3, align_corners=True)
        tensor([-1.,  0.,  1.])
    """
    dtype = dtype or torch.get_default_dtype()
    i = torch.arange(n, device=device, dtype=torch.float64)
    if align_corners:
        c = i * (2.0 / (n - 1)) - 1.0 if n > 1 else torch.zeros(1, device=device, dtype=torch.float64)
    else:
        c = (2.0 * i + 1.0) / n - 1.0
    return c.to(dtype)


def identity_grid(
    size: Sequence[int],
    align_corners: bool = False,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The identity sampling grid of spatial ``size`` ``(H, W)`` or ``(D, H, W)``: shape ``(1, *size, n)``.

    Example:
        >>> g = identity_grid((2, 3))
        >>> g.shape
        torch.Size([1, 2, 3, 2])
        >>> g[0, 1, 2]  # bottom-right pixel centre: (x, y)
        tensor([0.6667, 0.5000])
    """
    axes = [linspace_coords(s, align_corners, device=device, dtype=dtype) for s in size]  # (D,) H, W
    mesh = torch.meshgrid(*axes, indexing="ij")  # each (*size)
    return torch.stack(mesh[::-1], dim=-1).unsqueeze(0)  # (1, *size, n) with last dim (x, y[, z])


def axis_scale_shift(n: int, align_corners: bool) -> tuple[float, float]:
    """Coefficients ``(a, b)`` with ``normalised = a * pixel + b`` along an axis of ``n`` pixels.

    Example:
        >>> axis_scale_shift(4, False), axis_scale_shift(4, True)
        ((0.5, -0.75), (0.6666666666666666, -1.0))
    """
    if align_corners:
        return (2.0 / (n - 1), -1.0) if n > 1 else (0.0, 0.0)
    return 2.0 / n, 1.0 / n - 1.0


def normalised_from_pixel(size: Sequence[int], align_corners: bool = False, *, device=None, dtype=None) -> torch.Tensor:
    """Homogeneous matrix ``(n+1, n+1)`` mapping pixel ``(x, y[, z])`` to normalised coordinates.

    ``size`` is the spatial size ``(H, W)`` or ``(D, H, W)``.

    Example:
        >>> normalised_from_pixel((4, 4))
        tensor([[ 0.5000,  0.0000, -0.7500],
                [ 0.0000,  0.5000, -0.7500],
                [ 0.0000,  0.0000,  1.0000]], dtype=torch.float64)
    """
    n = len(size)
    m = torch.eye(n + 1, dtype=dtype or torch.float64, device=device)
    for k, s in enumerate(reversed(tuple(size))):  # k=0 is x (width)
        a, b = axis_scale_shift(int(s), align_corners)
        m[k, k] = a
        m[k, n] = b
    return m


def pixel_from_normalised(size: Sequence[int], align_corners: bool = False, *, device=None, dtype=None) -> torch.Tensor:
    """Inverse of :func:`normalised_from_pixel` (for ``align_corners=True`` every axis needs more than one pixel).

    Raises:
        ShapeError: an axis of size 1 with ``align_corners=True``.
    """
    n = len(size)
    m = torch.eye(n + 1, dtype=dtype or torch.float64, device=device)
    for k, s in enumerate(reversed(tuple(size))):
        a, b = axis_scale_shift(int(s), align_corners)
        if a == 0.0:
            raise ShapeError(
                "pixel_from_normalised: an axis of size 1 with align_corners=True has no inverse (every "
                "pixel of it maps to 0); use align_corners=False"
            )
        m[k, k] = 1.0 / a
        m[k, n] = -b / a
    return m


def to_homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., n, n+1)`` affine -> ``(..., n+1, n+1)`` with last row ``(0, ..., 0, 1)``; square input passes through.
    Takes a tensor only (:func:`matrix_to_pixel` / :func:`matrix_from_pixel` convert NumPy arrays)."""
    if not isinstance(matrix, torch.Tensor):
        raise DTypeError(
            f"matrix must be a torch.Tensor, got {type(matrix).__name__}; wrap a NumPy array in torch.from_numpy"
        )
    if matrix.shape[-2] == matrix.shape[-1]:
        return matrix
    n = matrix.shape[-2]
    last = torch.zeros(*matrix.shape[:-2], 1, n + 1, dtype=matrix.dtype, device=matrix.device)
    last[..., 0, n] = 1
    return torch.cat((matrix, last), dim=-2)


def matrix_to_pixel(
    matrix: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int],
    align_corners: bool = False,
    direction: str = "dst_to_src",
) -> torch.Tensor:
    """Convert our normalised output->input matrix to a pixel-space matrix.

    Args:
        matrix: ``(B, n, n+1)`` affine or ``(B, n+1, n+1)`` projective matrix in normalised coordinates, mapping
            output (destination) points to input (source) points; the unbatched ``(n, n+1)`` / ``(n+1, n+1)`` works
            too. A tensor or a NumPy array (converted with ``torch.as_tensor``; integers become the default float).
        in_size: spatial size of the input ``(H, W)`` / ``(D, H, W)``: height first, not OpenCV's ``(W, H)`` dsize
            (a swapped size of a non-square image is accepted and gives a wrong matrix).
        out_size: spatial size of the output, in the same order.
        align_corners: the convention the normalised matrix uses.
        direction: ``"dst_to_src"`` (the matrix ``cv2.warpAffine(..., flags=WARP_INVERSE_MAP)`` takes) or
            ``"src_to_dst"`` (what ``cv2.warpAffine`` and ``kornia.geometry.warp_affine`` take by default).

    Returns:
        A tensor of the shape of ``matrix``, in pixel coordinates (pixel centres at integers).

    Raises:
        ShapeError: a matrix that is not ``(..., n, n+1)`` / ``(..., n+1, n+1)`` for ``n = len(in_size)``.
        OptionError: an unknown ``direction``.

    Example:
        >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # read half an image-width to the right
        >>> matrix_to_pixel(theta, (4, 8), (4, 8))
        tensor([[[1., 0., 2.],
                 [0., 1., 0.]]])
    """
    look_up_option("direction", direction, ("dst_to_src", "src_to_dst"))
    matrix, in_size, out_size = _check_matrix(matrix, in_size, out_size)
    h = to_homogeneous(matrix).to(torch.float64)
    n_out = normalised_from_pixel(out_size, align_corners, device=matrix.device)
    p_in = pixel_from_normalised(in_size, align_corners, device=matrix.device)
    pix = p_in @ h @ n_out
    if direction == "src_to_dst":
        pix = torch.linalg.inv(pix)
    return pix[..., : matrix.shape[-2], :].to(matrix.dtype)


def matrix_from_pixel(
    matrix: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int],
    align_corners: bool = False,
    direction: str = "dst_to_src",
) -> torch.Tensor:
    """Inverse of :func:`matrix_to_pixel`: a pixel-space matrix to our normalised output->input matrix.

    Takes the same shapes, sizes and options as :func:`matrix_to_pixel`, e.g. the NumPy ``(2, 3)`` matrix
    ``cv2.getRotationMatrix2D`` / ``cv2.getAffineTransform`` return, which maps source to destination
    (``direction="src_to_dst"``). Sizes are ``(H, W)``, not OpenCV's ``(W, H)``.

    Example:
        >>> pix = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]])
        >>> matrix_from_pixel(pix, (4, 8), (4, 8))
        tensor([[[1.0000, 0.0000, 0.5000],
                 [0.0000, 1.0000, 0.0000]]])
    """
    look_up_option("direction", direction, ("dst_to_src", "src_to_dst"))
    matrix, in_size, out_size = _check_matrix(matrix, in_size, out_size)
    h = to_homogeneous(matrix).to(torch.float64)
    if direction == "src_to_dst":
        h = torch.linalg.inv(h)
    n_in = normalised_from_pixel(in_size, align_corners, device=matrix.device)
    p_out = pixel_from_normalised(out_size, align_corners, device=matrix.device)
    norm = n_in @ h @ p_out
    return norm[..., : matrix.shape[-2], :].to(matrix.dtype)


def _check_matrix(matrix: object, in_size: object, out_size: object):
    """``matrix`` as a float tensor (arrays converted) of shape ``(..., n, n+1)`` / ``(..., n+1, n+1)``, and the
    sizes as ``n`` ints each."""
    if not isinstance(matrix, torch.Tensor):
        matrix = torch.as_tensor(matrix)  # NumPy arrays and nested lists; numpy itself is not imported here
    if not matrix.is_floating_point():
        matrix = matrix.to(torch.get_default_dtype())
    n = matrix.shape[-1] - 1 if matrix.dim() >= 2 else 0
    if n not in (2, 3) or matrix.shape[-2] not in (n, n + 1):
        raise ShapeError(
            "matrix must be (B, n, n+1) affine or (B, n+1, n+1) projective with n = 2 or 3 (the batch "
            f"dim is optional), got shape {tuple(matrix.shape)}"
        )
    return matrix, check_size("in_size", in_size, n), check_size("out_size", out_size, n)


def grid_to_displacement(grid: torch.Tensor, align_corners: bool = False, order: str = "ij") -> torch.Tensor:
    """Sampling grid ``(B, *size, n)`` -> pixel displacement field ``(B, n, *size)`` (voxelmorph / MONAI DDF style).

    The field holds, for every output pixel, ``source_pixel - output_pixel`` in pixel units of the input, which is
    assumed to have the same spatial size as the grid. ``order="ij"`` orders channels like the spatial dims
    (``(dy, dx)`` / ``(dz, dy, dx)``, as voxelmorph and MONAI do); ``order="xy"`` gives ``(dx, dy[, dz])``.

    Example:
        >>> g = identity_grid((3, 5))
        >>> grid_to_displacement(g).abs().max().item() < 1e-6
        True
    """
    look_up_option("order", order, ("ij", "xy"))
    size = grid.shape[1:-1]
    ident = identity_grid(size, align_corners, device=grid.device, dtype=grid.dtype)
    scales = []
    for s in reversed(tuple(size)):  # x first
        a, _ = axis_scale_shift(int(s), align_corners)
        scales.append(1.0 / a if a != 0 else 0.0)
    scale = torch.tensor(scales, dtype=grid.dtype, device=grid.device)
    disp = (grid - ident) * scale  # (B, *size, n) in (x, y, z)
    if order == "ij":
        disp = disp.flip(-1)
    return disp.movedim(-1, 1).contiguous()  # (B, n, *size)


def displacement_to_grid(flow: torch.Tensor, align_corners: bool = False, order: str = "ij") -> torch.Tensor:
    """Pixel displacement field ``(B, n, *size)`` -> sampling grid ``(B, *size, n)``; inverse of
    :func:`grid_to_displacement`.

    Example:
        >>> flow = torch.zeros(1, 2, 3, 4)
        >>> flow[:, 1] = 1.0  # every pixel reads one pixel to the right (order "ij": channel 1 is dx)
        >>> displacement_to_grid(flow)[0, 0, 0]
        tensor([-0.2500, -0.6667])
    """
    look_up_option("order", order, ("ij", "xy"))
    size = flow.shape[2:]
    n = flow.shape[1]
    disp = flow.movedim(1, -1)  # (B, *size, n)
    if order == "ij":
        disp = disp.flip(-1)
    scales = [axis_scale_shift(int(s), align_corners)[0] for s in reversed(tuple(size))]
    scale = torch.tensor(scales[:n], dtype=flow.dtype, device=flow.device)
    return identity_grid(size, align_corners, device=flow.device, dtype=flow.dtype) + disp * scale
