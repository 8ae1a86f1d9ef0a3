"""Thin-plate splines (TPS) for spatial transformers (the paper's 16-control-point TPS, and any other layout).

A TPS maps an output point ``p`` to the input point ``f(p) = A [p, 1] + sum_k w_k U(|p - c_k|)`` with
``U(r) = r^2 log r^2``, where ``c_k`` are fixed control points (the *layout*: a square ``n x n`` lattice spanning
``[-1, 1]^2`` by default, a ``(rows, cols)`` lattice such as the 2 x 10 fiducial points of text rectifiers, or any
``K`` distinct, not all collinear points; see :func:`check_layout`) and the network predicts the *source* positions
``s_k = f(c_k)`` of those control points. Fitting ``(w, A)`` to ``s`` is a
linear solve with a system matrix ``L`` that depends only on the control points, so::

    grid = Basis(out points) @ L^-1[:, :K] @ s   =   M @ s        (M: (H*W, K), precomputed per out size)

and a forward pass is one batched matrix product. :func:`tps_grid_direct` keeps the plain solve for cross-checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

from torchstn._checks import autocast_off
from torchstn._tracing import static_size, untraced
from torchstn.coords import identity_grid
from torchstn.errors import OptionError

__all__ = [
    "Layout",
    "check_layout",
    "control_points",
    "lattice",
    "tps_kernel",
    "tps_system_matrix",
    "tps_grid_matrix",
    "tps_grid",
    "tps_grid_direct",
    "tps_transform_points",
]


#: A checked control-point layout (see :func:`check_layout`): ``n`` for an ``n x n`` lattice, ``(rows, cols)`` for
#: another lattice, or the points themselves as a tuple of ``(x, y)`` float pairs. Hashable, so bases are cached.
Layout = int | tuple[int, int] | tuple[tuple[float, float], ...]


def lattice(
    grid_size: int, cols: int | None = None, *, dtype: torch.dtype = torch.float64, device=None
) -> torch.Tensor:
    """Control points ``(K, 2)`` of a ``grid_size x cols`` lattice (rows x columns; ``cols`` defaults to
    ``grid_size``) spanning ``[-1, 1]^2``, row-major (``k = row * cols + col``, x varies fastest), each as ``(x, y)``.

    Example:
        >>> lattice(2)
        tensor([[-1., -1.],
                [ 1., -1.],
                [-1.,  1.],
                [ 1.,  1.]], dtype=torch.float64)
        >>> lattice(2, 3)[:3]  # the top row of a 2 x 3 lattice
        tensor([[-1., -1.],
                [ 0., -1.],
                [ 1., -1.]], dtype=torch.float64)
    """
    t = torch.linspace(-1.0, 1.0, grid_size, dtype=dtype, device=device)
    tx = t if cols is None or cols == grid_size else torch.linspace(-1.0, 1.0, cols, dtype=dtype, device=device)
    y, x = torch.meshgrid(t, tx, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1)


def check_layout(layout: object) -> Layout:
    """Check a control-point layout and return its canonical, hashable form.

    Args:
        layout: an int ``n >= 2`` (an ``n x n`` lattice spanning ``[-1, 1]^2``), a pair of ints ``(rows, cols)``
            (a ``rows x cols`` lattice; both ``>= 2``; ``(n, n)`` becomes ``n``), or the points themselves: a
            ``(K, 2)`` tensor, array or nested sequence of normalised ``(x, y)`` positions, ``K >= 3``, finite,
            distinct and not all on one line (else the TPS system is singular).

    Returns:
        ``n``, ``(rows, cols)`` or a tuple of ``(x, y)`` float pairs.

    Raises:
        OptionError: anything else, saying what was expected and what arrived.

    Example:
        >>> check_layout(4), check_layout([2, 10]), check_layout((3, 3))
        (4, (2, 10), 3)
        >>> check_layout([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: tps layout points are all on one line: the TPS system is singular; give at least 3 points not on one line
    """
    if isinstance(layout, tuple) and layout in _CHECKED_POINTS:  # the hand-off from a family: checked already
        return layout
    if _is_int(layout):
        if layout < 2:  # type: ignore[operator]
            raise OptionError(f"tps grid_size must be an int >= 2, got {layout!r}")
        return int(layout)  # type: ignore[call-overload]
    if isinstance(layout, (tuple, list)) and len(layout) == 2 and all(_is_int(v) for v in layout):
        rows, cols = (int(v) for v in layout)
        if rows < 2 or cols < 2:
            raise OptionError(
                f"a tps lattice needs rows >= 2 and cols >= 2 (else its points are on one line), got {tuple(layout)!r}"
            )
        return rows if rows == cols else (rows, cols)
    return _checked_points(_as_point_tuple(layout))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_point_tuple(layout: object) -> tuple[tuple[float, float], ...]:
    try:
        pts = torch.as_tensor(layout, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        pts = None
    if pts is None or isinstance(layout, (str, bytes)) or pts.dim() != 2 or pts.shape[1] != 2:
        raise OptionError(
            "tps layout must be an int n (n x n lattice), a (rows, cols) pair of ints or (K, 2) points (x, y), got "
            f"{layout!r}"
        )
    return tuple((float(x), float(y)) for x, y in pts.tolist())


_CHECKED_POINTS: set = set()


def _checked_points(points: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    if points in _CHECKED_POINTS:
        return points
    pts = torch.tensor(points, dtype=torch.float64).reshape(-1, 2)  # (K, 2)
    if pts.shape[0] < 3:
        raise OptionError(f"tps layout needs at least 3 points (not all on one line), got {pts.shape[0]}")
    if not bool(torch.isfinite(pts).all()):
        raise OptionError(f"tps layout points must be finite, got {points!r}")
    scale = max(float(pts.abs().max()), 1.0)
    d = torch.cdist(pts, pts).fill_diagonal_(math.inf)  # (K, K), self-distances left out
    i, j = divmod(int(d.argmin()), pts.shape[0])
    if float(d[i, j]) <= 1e-9 * scale:
        raise OptionError(f"tps layout points must be distinct: points {i} and {j} are both {points[i]}")
    sv = torch.linalg.svdvals(pts - pts.mean(0))  # the spread along the two principal directions
    if float(sv[1]) <= 1e-9 * scale * max(float(sv[0]), 1.0):
        raise OptionError(
            "tps layout points are all on one line: the TPS system is singular; give at least 3 points not on one line"
        )
    if len(_CHECKED_POINTS) < 256:
        _CHECKED_POINTS.add(points)
    return points


def control_points(layout: Layout, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The control points ``(K, 2)`` of a checked layout (see :func:`check_layout`), in the given dtype/device.

    Example:
        >>> control_points((2, 3)).shape, control_points(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)), dtype=torch.float32)
        (torch.Size([6, 2]), tensor([[0., 0.],
                [1., 0.],
                [0., 1.]]))
    """
    if isinstance(layout, int):
        return lattice(layout, dtype=dtype, device=device)
    if len(layout) == 2 and all(isinstance(v, int) for v in layout):
        return lattice(layout[0], layout[1], dtype=dtype, device=device)  # type: ignore[arg-type]
    return torch.tensor(layout, dtype=torch.float64).to(device=device, dtype=dtype)


def tps_kernel(points: torch.Tensor, ctrl: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``U(|p - c|) = r^2 log r^2`` between points ``(N, 2)`` and control points ``(K, 2)`` -> ``(N, K)`` (0 at r=0).

    ``eps > 0`` gives ``2 r^2 log(r + eps)`` instead: the kernel of clovaai's TPS (``r^2 log(r + eps)``; the factor
    2 cancels in the solve), which differs from the exact one by about ``2 r eps``.
    """
    d2 = (points.unsqueeze(-2) - ctrl).pow(2).sum(-1)
    if eps:
        return 2.0 * d2 * torch.log(d2.clamp_min(1e-30).sqrt() + eps)
    return d2 * torch.log(d2.clamp_min(1e-30))  # d2 log d2 -> 0 as d2 -> 0


def _basis(points: torch.Tensor, ctrl: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """``[U(p, c) | 1 | x | y]`` -> ``(N, K + 3)``."""
    ones = points.new_ones(points.shape[:-1] + (1,))
    return torch.cat((tps_kernel(points, ctrl, eps), ones, points), dim=-1)


def tps_system_matrix(ctrl: torch.Tensor, regularisation: float = 0.0) -> torch.Tensor:
    """The ``(K+3, K+3)`` TPS system ``L = [[U + lambda I, P], [P^T, 0]]`` with ``P = [1 | x | y]``."""
    K = ctrl.shape[0]
    P = torch.cat((ctrl.new_ones(K, 1), ctrl), dim=1)  # (K, 3)
    top = torch.cat(
        (tps_kernel(ctrl, ctrl) + regularisation * torch.eye(K, dtype=ctrl.dtype, device=ctrl.device), P), 1
    )
    bottom = torch.cat((P.t(), ctrl.new_zeros(3, 3)), dim=1)
    return torch.cat((top, bottom), dim=0)


@lru_cache(maxsize=64)
def _grid_matrix_cpu64(
    layout: Layout, out_size: tuple[int, ...], align_corners: bool, reg: float, eps: float = 0.0
) -> torch.Tensor:
    ctrl = control_points(layout)
    L_inv = torch.linalg.inv(tps_system_matrix(ctrl, reg))  # (K+3, K+3)
    pts = identity_grid(out_size, align_corners, dtype=torch.float64).reshape(-1, 2)  # (S, 2)
    return _basis(pts, ctrl, eps) @ L_inv[:, : ctrl.shape[0]]  # (S, K)


_DEVICE_CACHE: dict = {}


def _constant_under_compile(fn):
    """Let torch.compile treat the cached matrix as a graph constant instead of tracing its construction."""
    mark = getattr(getattr(torch, "compiler", None), "assume_constant_result", None)
    return mark(fn) if mark is not None else fn


@_constant_under_compile
def tps_grid_matrix(
    grid_size: Layout,
    out_size: Sequence[int],
    align_corners: bool = False,
    regularisation: float = 0.0,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    kernel_eps: float = 0.0,
) -> torch.Tensor:
    """The precomputed ``(H*W, K)`` matrix ``M`` with ``grid = M @ source_points``; cached per layout (``grid_size``:
    any layout :func:`check_layout` takes), size, dtype and device.

    Computed in float64 on the CPU once, then cast and moved (the identity stays exact to float rounding).
    ``kernel_eps`` (see :func:`tps_kernel`) changes the basis at the output points only, as clovaai's TPS does.
    """
    grid_size = check_layout(grid_size)
    eps = float(kernel_eps)
    key = (grid_size, tuple(out_size), bool(align_corners), float(regularisation), dtype, str(device), eps)
    m = _DEVICE_CACHE.get(key)
    if m is None:
        with untraced():  # a graph constant: never a traced or fake tensor (cached for the next call)
            m = _grid_matrix_cpu64(grid_size, tuple(out_size), bool(align_corners), float(regularisation), eps)
            m = m.to(device=device, dtype=dtype)
        if len(_DEVICE_CACHE) > 64:
            _DEVICE_CACHE.clear()
        _DEVICE_CACHE[key] = m
    return m


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def tps_grid(
    source_points: torch.Tensor,
    out_size: Sequence[int],
    grid_size: Layout,
    align_corners: bool = False,
    regularisation: float = 0.0,
    *,
    kernel_eps: float = 0.0,
) -> torch.Tensor:
    """TPS sampling grid from control-point source positions ``(B, K, 2)`` -> ``(B, H, W, 2)`` (precomputed path);
    ``grid_size`` is the layout of the control points (an int ``n`` for the ``n x n`` lattice, or any layout
    :func:`check_layout` takes).

    Half-precision inputs are computed in float32 and cast back; autocast is off for the product.
    """
    B, K, _ = source_points.shape
    work = _work_dtype(source_points.dtype)
    static = static_size(out_size)  # M is per size: a size traced from the input's shape is fixed to its value
    M = tps_grid_matrix(
        grid_size, static, align_corners, regularisation, dtype=work, device=source_points.device, kernel_eps=kernel_eps
    )
    # One (2B, K) @ (K, S) product is ~3x faster than the batched (S, K) @ (B, K, 2) on CPU (bench_tps.py "layout")
    src = source_points.to(work).transpose(1, 2).reshape(2 * B, K)  # (2B, K): rows x_b, y_b
    with autocast_off(src.device):  # autocast would run the product in half precision
        grid = (src @ M.t()).view(B, 2, -1).transpose(1, 2)  # (B, S, 2)
    grid = grid.reshape(B, *static, 2)
    if any(isinstance(s, torch.Tensor) for s in out_size):  # traced from the input's shape: a traced model given
        grid = grid.expand(B, *out_size, 2)  # another size must fail (a reshape alone would pass 16x4 for 8x8)
    return grid.to(source_points.dtype)


def tps_grid_direct(
    source_points: torch.Tensor,
    out_size: Sequence[int],
    grid_size: Layout,
    align_corners: bool = False,
    regularisation: float = 0.0,
    *,
    kernel_eps: float = 0.0,
) -> torch.Tensor:
    """Same as :func:`tps_grid` but solving the TPS system for every batch element (reference path)."""
    B = source_points.shape[0]
    pts = identity_grid(out_size, align_corners, dtype=source_points.dtype, device=source_points.device)
    pts = pts.reshape(1, -1, 2).expand(B, -1, -1)  # (B, H*W, 2)
    return tps_transform_points(source_points, pts, grid_size, regularisation, kernel_eps=kernel_eps).view(
        B, *out_size, 2
    )


def tps_transform_points(
    source_points: torch.Tensor,
    points: torch.Tensor,
    grid_size: Layout,
    regularisation: float = 0.0,
    *,
    kernel_eps: float = 0.0,
) -> torch.Tensor:
    """Map output points ``(B, N, 2)`` to input points with the TPS through ``source_points`` ``(B, K, 2)`` of the
    control points of layout ``grid_size`` (see :func:`check_layout`), solving the system directly
    (``torch.linalg.solve``, upcast from half precision, autocast off)."""
    layout = check_layout(grid_size)
    work = _work_dtype(source_points.dtype)
    src = source_points.to(work)
    with autocast_off(src.device):
        ctrl = control_points(layout, dtype=work, device=src.device)
        L = tps_system_matrix(ctrl, regularisation)  # (K+3, K+3)
        rhs = torch.cat((src, src.new_zeros(src.shape[0], 3, 2)), dim=1)  # (B, K+3, 2)
        params = torch.linalg.solve(L, rhs)  # (B, K+3, 2): [w; a0; ax; ay]
        out = _basis(points.to(work), ctrl, kernel_eps) @ params  # (B, N, K+3) @ (B, K+3, 2)
    return out.to(source_points.dtype)
