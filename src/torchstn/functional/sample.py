"""The sampler: read an input at the positions of a grid (the paper's differentiable image sampling, §3.3)."""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch

from torchstn._checks import check_finite as _check_finite
from torchstn._tracing import is_tracing
from torchstn.errors import OptionError
from torchstn.functional.antialias import antialiased_sample
from torchstn.functional.reading import (
    MODES,
    PADDING_MODES,
    check_deterministic,
    check_sample_args,
    match_grid,
    read_padded,
)

__all__ = ["sample", "MODES", "PADDING_MODES"]

Mode = Literal["bilinear", "nearest", "bicubic"]
PaddingMode = Literal["zeros", "border", "reflection", "fill"]


def sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    *,
    mode: Mode = "bilinear",
    padding_mode: PaddingMode = "zeros",
    fill_value: float | torch.Tensor = 0.0,
    align_corners: bool = False,
    check_finite: bool = True,
    antialias: bool = False,
    jacobian: torch.Tensor | None = None,
    deterministic: bool | None = None,
) -> torch.Tensor:
    """Sample ``input`` at the normalised positions in ``grid``.

    All options are keyword-only so further sampling modes (e.g. anti-aliasing) can be added without breaking calls.

    Args:
        input: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating-point tensor.
        grid: ``(B, H', W', 2)`` or ``(B, D', H', W', 3)`` normalised source positions, last dim ``(x, y[, z])``
            (see ``docs/conventions.md``). A grid with batch 1 is shared by the whole batch.
        mode: ``"bilinear"`` (trilinear in 3D), ``"nearest"`` or ``"bicubic"`` (2D only).
        padding_mode: what points outside the input read: ``"zeros"``, ``"border"`` (nearest edge pixel),
            ``"reflection"``, or ``"fill"`` (``fill_value``, a scalar or a per-channel ``(C,)`` tensor; use the
            background value of your data, e.g. the normalised black level, so an ST that zooms out does not paste
            an artificial frame).
        fill_value: the value for ``padding_mode="fill"``. Where every tap of a point is inside the input it plays
            no part (no cancellation however large it is); the fill path computes half precision in float32.
        align_corners: see ``docs/conventions.md``.
        check_finite: raise :class:`~torchstn.NonFiniteError` if the grid holds NaN/inf (the default policy;
            skipped inside ``torch.compile``). With ``False`` non-finite points behave as ``F.grid_sample`` does.
        antialias: average the input over each output pixel's footprint (a mip-map pyramid read trilinearly, plus
            taps along the long edge of anisotropic footprints; see ``docs/antialias.md`` and, for a sharper and
            slower variant, :func:`torchstn.functional.antialias.sample_antialiased`) so that a grid that zooms
            out does not alias. Bilinear only; where the grid does not downsample (footprint <= 1 input pixel on
            every axis) the result is exactly that of ``antialias=False``.
        jacobian: with ``antialias``, the footprint ``d(input pixel)/d(output pixel)``: ``(B, n, n)`` per sample
            (e.g. :func:`torchstn.functional.antialias.affine_jacobian`) or ``(B, *out, n, n)`` per pixel.
            ``None`` estimates it from the grid by finite differences (works for every family).
        deterministic: ``True`` samples with a gather-based implementation whose backward sums the gradient of
            ``input`` in a fixed order (``F.grid_sample``'s CUDA backward uses ``atomicAdd``: run-to-run differences,
            and an error under ``torch.use_deterministic_algorithms(True)``). Bilinear and nearest, every padding
            mode, 2D and 3D; slower than ``F.grid_sample`` (see ``docs/determinism.md``). ``None`` (default) uses it
            only where ``F.grid_sample`` would refuse: a CUDA input, torch's deterministic mode on, and a backward
            to come; ``False`` always uses ``F.grid_sample``.

    Returns:
        ``(B, C, H', W')`` or ``(B, C, D', H', W')`` in the dtype of ``input``.

    Raises:
        DTypeError: non-float ``input`` or ``grid``.
        ShapeError: ranks that do not match, wrong last grid dim, or batch sizes that differ.
        OptionError: unknown ``mode`` / ``padding_mode``, ``bicubic`` on volumes, ``antialias`` with a mode other
            than bilinear, ``jacobian`` without ``antialias``, ``deterministic=True`` with ``mode="bicubic"``
            or ``antialias``, a non-bool ``align_corners`` or a malformed ``fill_value``.
        NonFiniteError: non-finite grid values with ``check_finite=True``.

    Example:
        >>> from torchstn.coords import identity_grid
        >>> x = torch.arange(6.0).view(1, 1, 2, 3)
        >>> torch.equal(sample(x, identity_grid((2, 3))), x)
        True
        >>> checker = (torch.arange(8.0).view(1, 8) + torch.arange(8.0).view(8, 1)) % 2  # 1-pixel squares
        >>> sample(checker.view(1, 1, 8, 8), identity_grid((2, 2)), antialias=True)  # 4x zoom-out: the mean
        tensor([[[[0.5000, 0.5000],
                  [0.5000, 0.5000]]]])
        >>> g = torch.rand(1, 4, 5, 2) * 2.4 - 1.2  # some points outside
        >>> torch.allclose(sample(x, g, deterministic=True), sample(x, g), atol=1e-6)
        True
    """
    grid = check_sample_args(input, grid, mode, padding_mode, fill_value, align_corners)
    if check_finite:
        _check_finite("grid", grid)
    if deterministic is not None:
        check_deterministic(deterministic, mode, antialias)
    if jacobian is not None and not antialias:
        raise OptionError("jacobian= is only used with antialias=True")
    if antialias and mode != "bilinear":
        raise OptionError(f"antialias=True needs mode='bilinear' (trilinear in 3D), got mode={mode!r}")
    return _sample(input, grid, mode, padding_mode, fill_value, align_corners, antialias, jacobian, deterministic)


def sample_unchecked(
    input: torch.Tensor,
    grid: torch.Tensor,
    *,
    mode: str,
    padding_mode: str,
    fill_value: float | torch.Tensor,
    align_corners: bool,
    antialias: bool,
    jacobian: torch.Tensor | None,
    deterministic: bool | None,
) -> torch.Tensor:
    """:func:`sample` for a caller that has validated the input and the options itself, as
    :class:`~torchstn.nn.SpatialTransformer` does (its options at construction, ``U`` at each forward): only the fit
    of ``grid`` to ``input`` is checked (:func:`~torchstn.functional.reading.match_grid`), since the grid is computed.
    Nothing else is checked, so wrong arguments fail inside PyTorch, not with a torchstn error: call :func:`sample`.
    """
    grid = match_grid(input, grid)
    return _sample(input, grid, mode, padding_mode, fill_value, align_corners, antialias, jacobian, deterministic)


def _sample(input, grid, mode, padding_mode, fill_value, align_corners, antialias, jacobian, deterministic):
    """The sampler proper, on checked arguments (``grid`` batch == ``input`` batch)."""
    if antialias:
        return antialiased_sample(input, grid, padding_mode, fill_value, align_corners, jacobian)
    work = torch.promote_types(grid.dtype, input.dtype)
    x, grid = input.to(work), grid.to(work)  # no-ops when the dtypes agree
    read = None
    if _use_gather(deterministic, input, grid, mode):

        def read(img, padding, grid):
            return _gather_sample(img, grid, mode, padding, align_corners)

    return read_padded(x, grid, mode, padding_mode, fill_value, align_corners, read).to(input.dtype)


# -- the deterministic sampler -----------------------------------------------------------------------------------
def _use_gather(deterministic, input, grid, mode) -> bool:
    """Whether :func:`sample` (without antialias) takes the gather-based path (see its ``deterministic`` argument)."""
    if deterministic is None:
        # F.grid_sample's CUDA backward raises under torch's deterministic mode (even for the grid gradient alone)
        return (
            input.is_cuda
            and mode != "bicubic"
            and torch.are_deterministic_algorithms_enabled()
            and torch.is_grad_enabled()
            and (input.requires_grad or grid.requires_grad)
        )
    return bool(deterministic)


def _gather_sample(input, grid, mode, padding_mode, align_corners):
    """``F.grid_sample`` (bilinear / trilinear or nearest) as index arithmetic and one row gather, whose backward to
    ``input`` is the deterministic :class:`_ScatterAddRows`; the grid gradient comes from autograd on the weights.
    Tap and corner dims lead, ``(K, B, N)``, so every elementwise op runs along the long point dim."""
    B, C, *in_size = input.shape
    n, out_size, S = len(in_size), grid.shape[1:-1], math.prod(in_size)
    points = grid.reshape(B, -1, n)  # (B, N, n), last dim (x, y[, z])
    index = torch.arange(B, device=input.device).view(1, B, 1) * S  # the first row of each sample, (1, B, 1)
    weight = None
    stride = 1
    for d in reversed(range(n)):  # input spatial dims W, H[, D]; dim d is grid column n - 1 - d
        x = _source_pixel(points[..., n - 1 - d], in_size[d], padding_mode, align_corners)  # (B, N) in pixels
        idx, w = _taps(x, in_size[d], mode)  # (T, B, N): T = 2 taps (bilinear) or 1 (nearest)
        # every tap of this axis with every corner so far: (K, 1, B, N) + (1, T, B, N) -> (K * T, B, N)
        index = (index.unsqueeze(1) + (idx if stride == 1 else idx * stride).unsqueeze(0)).flatten(0, 1)
        weight = w if weight is None else (weight.unsqueeze(1) * w.unsqueeze(0)).flatten(0, 1)
        stride *= in_size[d]
    K = index.shape[0]
    rows = input.movedim(1, -1).reshape(B * S, C)  # (B * S, C): one row per input pixel, channels last
    if C == 1:
        rows = rows.view(-1)  # (B * S,): a 1-D gather and scatter are several times faster than of 1-wide rows
    # a tracer records the plain gather (the forward is the same; a saved trace cannot hold a Python Function)
    index = index.view(-1)
    values = rows.index_select(0, index) if is_tracing() else _GatherRows.apply(rows, index)
    values = values.view(K, -1, C)  # (K, B * N, C)
    out = (values * weight.view(K, -1, 1)).sum(0)  # (B * N, C)
    return out.view(B, -1, C).transpose(1, 2).reshape(B, C, *out_size)


def _source_pixel(coord, size: int, padding_mode: str, align_corners: bool):
    """Normalised coordinates -> input pixel coordinates, with border clamping / reflection as ``F.grid_sample``."""
    if align_corners:
        x = (coord + 1) / 2 * (size - 1)
    else:
        x = ((coord + 1) * size - 1) / 2
    if padding_mode == "border":
        x = _clip(x, size)
    elif padding_mode == "reflection":
        x = _reflect(x, 0, 2 * (size - 1)) if align_corners else _reflect(x, -1, 2 * size - 1)
        x = _clip(x, size)
    return x


def _clip(x, size: int):
    """Clamp pixel coordinates to ``[0, size - 1]`` with ``F.grid_sample``'s gradient: 0 at the bounds and beyond.
    (``torch.clamp`` passes a gradient of 1 *at* the bounds: at ``x = size - 1`` that left the zero-padding
    derivative ``-v[size - 1]``, e.g. on every identity grid.) NaN stays NaN."""
    inside = (x > 0) & (x < size - 1)
    return torch.where(inside, x, x.detach().clamp(0, size - 1))


def _reflect(x, twice_low: int, twice_high: int):
    """Reflect ``x`` into ``[twice_low / 2, twice_high / 2]`` (mirror at both ends, repeatedly)."""
    if twice_low == twice_high:  # a size-1 axis: always 0, with a zero gradient that keeps x in the graph
        return torch.where(torch.zeros_like(x, dtype=torch.bool), x, 0.0)
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    x = (x - low).abs()
    extra = torch.fmod(x, span)
    flips = torch.floor(x / span)
    return torch.where(flips % 2 == 0, extra + low, span - extra + low)


def _taps(x, size: int, mode: str):
    """Positions ``(T, B, N)`` (long) of the taps along one axis and their weights, 0 for taps outside the input
    (whose position is then 0, any valid row)."""
    if mode == "nearest":
        pos = torch.round(x).unsqueeze(0)  # (1, B, N); round half to even, as F.grid_sample
        w = 1 + (pos - pos.detach())  # 1 with a zero grid gradient, as F.grid_sample
    else:
        x0 = torch.floor(x)
        tap = torch.arange(2, dtype=x.dtype, device=x.device).view(2, 1, 1)
        pos = x0 + tap  # (2, B, N): x0, x0 + 1
        w = (x - x0) * (2 * tap - 1) + (1 - tap)  # (2, B, N): 1 - frac, frac
    inside = (pos >= 0) & (pos <= size - 1)  # False for NaN too: non-finite points read zero
    return torch.where(inside, pos.detach(), 0).long(), torch.where(inside, w, 0)


class _GatherRows(torch.autograd.Function):
    """``rows[index]`` for ``rows (R, C)`` or ``(R,)``, ``index (M,)``; the backward is the deterministic
    :class:`_ScatterAddRows` (autograd's own, ``index_add_``, adds atomically on CUDA)."""

    @staticmethod
    def forward(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return rows.index_select(0, index)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        rows, index = inputs
        ctx.save_for_backward(index)
        ctx.num_rows = rows.shape[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return _ScatterAddRows.apply(grad, index, ctx.num_rows), None


class _ScatterAddRows(torch.autograd.Function):
    """``out[index[m]] += values[m]`` into ``num_rows`` zero rows, summed in a fixed order; half precision is
    accumulated in float32. Its backward is :class:`_GatherRows`, so double backward works too."""

    @staticmethod
    def forward(values: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
        acc = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
        out = values.new_zeros((num_rows, *values.shape[1:]), dtype=acc)
        with _deterministic_algorithms():
            out.index_put_((index,), values.to(acc), accumulate=True)
        return out.to(values.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return _GatherRows.apply(grad, index), None, None


@contextlib.contextmanager
def _deterministic_algorithms():
    """Turn torch's deterministic mode on for one call, so ``index_put_(accumulate=True)`` takes its deterministic
    kernel (sort-based on CUDA; on CPU no multi-threaded atomic adds). The setting is process-wide: it is switched
    on with ``warn_only=True``, so a nondeterministic op another thread runs meanwhile warns rather than fails, and
    restored exactly. Not switched while ``torch.compile`` traces (it cannot be traced): compiled code is
    deterministic only under the user's own ``torch.use_deterministic_algorithms(True)``."""
    if torch.compiler.is_compiling() or torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False, warn_only=warn_only)
