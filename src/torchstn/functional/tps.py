"""Thin-plate splines (TPS) for spatial transformers (the paper's 16-control-point TPS).

A TPS maps an output point ``p`` to the input point ``f(p) = A [p, 1] + sum_k w_k U(|p - c_k|)`` with
``U(r) = r^2 log r^2``, where ``c_k`` are fixed control points (a regular lattice spanning ``[-1, 1]^2``) and the
network predicts the *source* positions ``s_k = f(c_k)`` of those control points. Fitting ``(w, A)`` to ``s`` is a
linear solve with a system matrix ``L`` that depends only on the control points, so::

    grid = Basis(out points) @ L^-1[:, :K] @ s   =   M @ s        (M: (H*W, K), precomputed per out size)

and a forward pass is one batched matrix product. :func:`tps_grid_direct` keeps the plain solve for cross-checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from torchstn._checks import autocast_off
from torchstn._tracing import static_size, untraced
from torchstn.coords import identity_grid

__all__ = [
    "lattice",
    "tps_kernel",
    "tps_system_matrix",
    "tps_grid_matrix",
    "tps_grid",
    "tps_grid_direct",
    "tps_transform_points",
]


def lattice(grid_size: int, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Control points ``(K, 2)`` of a ``grid_size x grid_size`` lattice spanning ``[-1, 1]^2``, row-major
    (``k = row * grid_size + col``, x varies fastest), each as ``(x, y)``.

    Example:
        >>> lattice(2)
        tensor([[-1., -1.],
                [ 1., -1.],
                [-1.,  1.],
                [ 1.,  1.]], dtype=torch.float64)
    """
    t = torch.linspace(-1.0, 1.0, grid_size, dtype=dtype, device=device)
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=1)


def tps_kernel(points: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
    """``U(|p - c|) = r^2 log r^2`` between points ``(N, 2)`` and control points ``(K, 2)`` -> ``(N, K)`` (0 at r=0)."""
    d2 = (points.unsqueeze(-2) - ctrl).pow(2).sum(-1)
    return d2 * torch.log(d2.clamp_min(1e-30))  # d2 log d2 -> 0 as d2 -> 0


def _basis(points: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
    """``[U(p, c) | 1 | x | y]`` -> ``(N, K + 3)``."""
    ones = points.new_ones(points.shape[:-1] + (1,))
    return torch.cat((tps_kernel(points, ctrl), ones, points), dim=-1)


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
def _grid_matrix_cpu64(grid_size: int, out_size: tuple[int, ...], align_corners: bool, reg: float) -> torch.Tensor:
    ctrl = lattice(grid_size)
    L_inv = torch.linalg.inv(tps_system_matrix(ctrl, reg))  # (K+3, K+3)
    pts = identity_grid(out_size, align_corners, dtype=torch.float64).reshape(-1, 2)  # (S, 2)
    return _basis(pts, ctrl) @ L_inv[:, : ctrl.shape[0]]  # (S, K)


_DEVICE_CACHE: dict = {}


def _constant_under_compile(fn):
    """Let torch.compile treat the cached matrix as a graph constant instead of tracing its construction."""
    mark = getattr(getattr(torch, "compiler", None), "assume_constant_result", None)
    return mark(fn) if mark is not None else fn


@_constant_under_compile
def tps_grid_matrix(
    grid_size: int,
    out_size: Sequence[int],
    align_corners: bool = False,
    regularisation: float = 0.0,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """The precomputed ``(H*W, K)`` matrix ``M`` with ``grid = M @ source_points``; cached per size/dtype/device.

    Computed in float64 on the CPU once, then cast and moved (the identity stays exact to float rounding).
    """
    key = (grid_size, tuple(out_size), bool(align_corners), float(regularisation), dtype, str(device))
    m = _DEVICE_CACHE.get(key)
    if m is None:
        with untraced():  # a graph constant: never a traced or fake tensor (cached for the next call)
            m = _grid_matrix_cpu64(grid_size, tuple(out_size), bool(align_corners), float(regularisation))
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
    grid_size: int,
    align_corners: bool = False,
    regularisation: float = 0.0,
) -> torch.Tensor:
    """TPS sampling grid from control-point source positions ``(B, K, 2)`` -> ``(B, H, W, 2)`` (precomputed path).

    Half-precision inputs are computed in float32 and cast back; autocast is off for the product.
    """
    B, K, _ = source_points.shape
    work = _work_dtype(source_points.dtype)
    static = static_size(out_size)  # M is per size: a size traced from the input's shape is fixed to its value
    M = tps_grid_matrix(grid_size, static, align_corners, regularisation, dtype=work, device=source_points.device)
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
    grid_size: int,
    align_corners: bool = False,
    regularisation: float = 0.0,
) -> torch.Tensor:
    """Same as :func:`tps_grid` but solving the TPS system for every batch element (reference path)."""
    B = source_points.shape[0]
    pts = identity_grid(out_size, align_corners, dtype=source_points.dtype, device=source_points.device)
    return tps_transform_points(source_points, pts.reshape(1, -1, 2).expand(B, -1, -1), grid_size, regularisation).view(
        B, *out_size, 2
    )


def tps_transform_points(
    source_points: torch.Tensor, points: torch.Tensor, grid_size: int, regularisation: float = 0.0
) -> torch.Tensor:
    """Map output points ``(B, N, 2)`` to input points with the TPS through ``source_points`` ``(B, K, 2)``,
    solving the system directly (``torch.linalg.solve``, upcast from half precision, autocast off)."""
    work = _work_dtype(source_points.dtype)
    src = source_points.to(work)
    with autocast_off(src.device):
        ctrl = lattice(grid_size, dtype=work, device=src.device)
        L = tps_system_matrix(ctrl, regularisation)  # (K+3, K+3)
        rhs = torch.cat((src, src.new_zeros(src.shape[0], 3, 2)), dim=1)  # (B, K+3, 2)
        params = torch.linalg.solve(L, rhs)  # (B, K+3, 2): [w; a0; ax; ay]
        out = _basis(points.to(work), ctrl) @ params  # (B, N, K+3) @ (B, K+3, 2)
    return out.to(source_points.dtype)
