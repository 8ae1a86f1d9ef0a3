"""Affine grids (2D and 3D) and affine matrix utilities.

``affine_grid`` computes the same grid as :func:`torch.nn.functional.affine_grid` by broadcast arithmetic on the
per-axis pixel-centre coordinates instead of a batched matrix product against a materialised base grid, and its
backward is one small matrix product. See ``benchmarks/bench_affine_st.py`` for the speed-up. While a tracer records
the call (``torch.jit.trace``, an ONNX exporter, ``torch.export``) the same arithmetic runs as plain ops, which every
tracer keeps (the TorchScript ONNX exporter wrote a constant garbage grid from the custom autograd function).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from torchstn._checks import check_float_tensor, check_size
from torchstn._tracing import is_tracing
from torchstn.coords import linspace_coords, to_homogeneous
from torchstn.errors import ShapeError

__all__ = ["affine_grid", "compose_affine", "invert_affine", "to_homogeneous", "transform_points_affine"]


def _axes(size: Sequence[int], align_corners: bool, like: torch.Tensor) -> list[torch.Tensor]:
    """Per-axis coordinates in (x, y[, z]) order, each shaped to broadcast against (B, *size)."""
    n = len(size)
    axes = []
    for k, s in enumerate(reversed(tuple(size))):  # k = 0 -> x (last spatial dim)
        c = linspace_coords(s, align_corners, device=like.device, dtype=like.dtype)
        shape = [1] * (n + 1)
        shape[n - k] = -1  # not s: under jit tracing s may be a traced size
        axes.append(c.view(shape))  # (1, ..., s, ..., 1)
    return axes


def _grid_coords(matrix: torch.Tensor, size: Sequence[int], align_corners: bool) -> Iterator[torch.Tensor]:
    """The ``n`` output coordinates ``(B, *size)`` of the grid, one at a time (``coord_r = sum_j m[r, j] * axis_j +
    m[r, n]``): the eager Function writes each into its output before the next is made."""
    n = len(size)
    axes = _axes(size, align_corners, matrix)
    # (B, n, n+1, 1, ..., 1) by indexing, not reshape(B, ...): torch 2.9's dynamo exporter guards a reshape by the
    # traced batch size against a dynamic batch of 1 and fails
    m = matrix[(...,) + (None,) * n]
    for r in range(n):
        acc = m[:, r, n] + m[:, r, 0] * axes[0]
        for j in range(1, n):
            acc = acc + m[:, r, j] * axes[j]
        yield acc  # (B, *size)


class _AffineGrid(torch.autograd.Function):
    """The grid with a one-product backward (eager and ``torch.compile``). A tracer records :func:`_grid_coords`
    stacked instead: the TorchScript ONNX exporter inlined this Function and lost the slice-by-slice fill of its
    output buffer (a constant garbage grid, the localisation net dropped), and a saved trace cannot hold it."""

    @staticmethod
    def forward(matrix: torch.Tensor, size: tuple[int, ...], align_corners: bool) -> torch.Tensor:
        grid = matrix.new_empty((matrix.shape[0], *size, len(size)))
        for r, coord in enumerate(_grid_coords(matrix, size, align_corners)):
            grid[..., r] = coord
        return grid

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, size, align_corners = inputs
        ctx.size = size
        ctx.align_corners = align_corners

    @staticmethod
    def backward(ctx, grad_grid: torch.Tensor):
        size = ctx.size
        n = len(size)
        B = grad_grid.shape[0]
        # base (S, n+1) homogeneous coordinates; grad_matrix (B, n, n+1) = grad (B, n, S) @ base (S, n+1)
        from torchstn.coords import identity_grid

        base = identity_grid(size, ctx.align_corners, device=grad_grid.device, dtype=grad_grid.dtype)
        base = base.reshape(-1, n)
        base = torch.cat((base, base.new_ones(base.shape[0], 1)), dim=1)  # (S, n+1)
        g = grad_grid.reshape(B, -1, n).transpose(1, 2)  # (B, n, S)
        return g @ base, None, None


def affine_grid(matrix: torch.Tensor, out_size: Sequence[int] | int, align_corners: bool = False) -> torch.Tensor:
    """Sampling grid of an affine map.

    Args:
        matrix: ``(B, 2, 3)`` or ``(B, 3, 4)`` normalised output->input matrices.
        out_size: spatial output size ``(H, W)`` or ``(D, H, W)``.
        align_corners: see ``docs/conventions.md``.

    Returns:
        grid ``(B, H, W, 2)`` or ``(B, D, H, W, 3)``, equal to ``F.affine_grid`` up to float rounding.

    Raises:
        ShapeError: if ``matrix`` is not ``(B, n, n+1)`` with n in {2, 3} or ``out_size`` does not match.
        DTypeError: if ``matrix`` is not floating point.

    Example:
        >>> theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        >>> g = affine_grid(theta, (2, 2))
        >>> g[0, 0, 0], g[0, 1, 1]
        (tensor([-0.5000, -0.5000]), tensor([0.5000, 0.5000]))
    """
    check_float_tensor("matrix", matrix)
    if matrix.dim() != 3 or matrix.shape[1] not in (2, 3) or matrix.shape[2] != matrix.shape[1] + 1:
        raise ShapeError(f"matrix must be (B, 2, 3) or (B, 3, 4), got {tuple(matrix.shape)}")
    n = matrix.shape[1]
    size = check_size("out_size", out_size, n)
    if is_tracing():
        return torch.stack(list(_grid_coords(matrix, size, bool(align_corners))), dim=-1)  # (B, *size, n)
    return _AffineGrid.apply(matrix, size, bool(align_corners))


def compose_affine(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Compose two output->input maps: the result samples like applying the ST ``first`` and then ``second``.

    If ``V1 = warp(U, first)`` and ``V2 = warp(V1, second)`` then ``V2 ~= warp(U, compose_affine(first, second))``:
    an output point ``p`` of the second warp reads ``second @ p`` in V1, which reads ``first @ second @ p`` in U.

    Args:
        first, second: ``(B, n, n+1)`` affine or ``(B, n+1, n+1)`` projective matrices of the same rank ``n``
            (2 or 3), in any mix; a batch of 1 broadcasts.

    Returns:
        ``(B, n, n+1)`` when both are affine; otherwise the ``(B, n+1, n+1)`` projective product (the composite of a
        projective map with any other is projective, so it is never cut back to an affine shape). The product is
        not rescaled: it maps points exactly as ``first`` after ``second``.

    Raises:
        DTypeError: a matrix that is not floating point.
        ShapeError: a matrix that is neither ``(B, n, n+1)`` nor ``(B, n+1, n+1)``, or ranks that differ.

    Example:
        >>> a = torch.tensor([[[2.0, 0.0, 0.1], [0.0, 2.0, 0.0]]])
        >>> compose_affine(a, invert_affine(a)).round(decimals=6)
        tensor([[[1., 0., 0.],
                 [0., 1., 0.]]])
        >>> h = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]]])  # a homography
        >>> compose_affine(a, h).shape  # the perspective row is kept
        torch.Size([1, 3, 3])
    """
    n, m = _matrix_rank("first", first), _matrix_rank("second", second)
    if m != n:
        raise ShapeError(
            f"cannot compose a {n}D map with a {m}D one: first {tuple(first.shape)}, second {tuple(second.shape)}"
        )
    out = to_homogeneous(first) @ to_homogeneous(second)
    projective = first.shape[-2] == first.shape[-1] or second.shape[-2] == second.shape[-1]
    return out if projective else out[..., :n, :]


def _matrix_rank(name: str, matrix: torch.Tensor) -> int:
    """The spatial rank ``n`` of a ``(B, n, n+1)`` affine or ``(B, n+1, n+1)`` projective matrix, n in {2, 3}."""
    check_float_tensor(name, matrix)
    rows, cols = matrix.shape[-2:] if matrix.dim() == 3 else (0, 0)
    if cols - 1 not in (2, 3) or rows not in (cols - 1, cols):
        raise ShapeError(
            f"{name} must be a (B, n, n+1) affine or (B, n+1, n+1) projective matrix with n in (2, 3), "
            f"got {tuple(matrix.shape)}"
        )
    return cols - 1


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(B, n, n+1)`` affine (or ``(B, n+1, n+1)`` projective) matrices, same shape as the input.

    Computed in at least float32 precision (half inputs are upcast and cast back).

    Raises:
        DTypeError: a matrix that is not floating point.
        ShapeError: a matrix that is neither ``(B, n, n+1)`` nor ``(B, n+1, n+1)`` with n in (2, 3).

    Example:
        >>> invert_affine(torch.tensor([[[2.0, 0.0, 0.5], [0.0, 4.0, 0.0]]]))
        tensor([[[ 0.5000,  0.0000, -0.2500],
                 [ 0.0000,  0.2500,  0.0000]]])
    """
    _matrix_rank("matrix", matrix)
    h = to_homogeneous(matrix)
    work = h if h.dtype in (torch.float32, torch.float64) else h.float()
    inv = torch.linalg.inv(work).to(matrix.dtype)
    return inv[..., : matrix.shape[-2], :]


def transform_points_affine(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, n, n+1)`` matrices to points ``(B, N, n)`` -> ``(B, N, n)``.

    Example:
        >>> m = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.0]]])
        >>> transform_points_affine(m, torch.tensor([[[1.0, 1.0]]]))
        tensor([[[0.6000, 0.5000]]])
    """
    n = matrix.shape[-2]
    return points @ matrix[..., :n].transpose(-1, -2) + matrix[..., n].unsqueeze(-2)
