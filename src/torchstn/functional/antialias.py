"""Anti-aliased sampling: average the input over each output pixel's footprint instead of reading 4 pixels.

A transform that zooms out reads, for every output pixel, a region of the input larger than one pixel (its
*footprint*). Bilinear sampling ignores that region and aliases (paper §3.4). Here the footprint is the parallelogram
spanned by the columns of the Jacobian ``J = d(input pixel) / d(output pixel)`` (its *edges*, in input pixels: from
the matrix per sample for affine maps, from finite differences of the grid per pixel otherwise), and the sampler
integrates the input over it with two cheap pieces:

1. **A mip-map pyramid** of 2x2 (2x2x2 in 3D) area averages, read with **trilinear blending** between the two levels
   around a continuous level (so the output is continuous, and differentiable, in the transform).
2. **Taps**: ``N_x x N_y (x N_z)`` bilinear reads spread along the edges of the parallelogram. By default taps are
   only added along the long edge of an anisotropic footprint (a 4x-in-x, 1x-in-y map reads 4 taps along x at full
   resolution, like GPU anisotropic filtering); ``tap_share`` in :func:`sample_antialiased` adds taps everywhere
   for a sharper, slower filter. Rotation needs nothing special: the taps follow the rotated edges.

The level and the tap spacing follow the variance of a box as wide as the footprint (the ideal area filter); see
:func:`_plan`. Where the footprint is at most one input pixel on every axis the result is plain
bilinear sampling, bit for bit. ``docs/antialias.md`` has the measurements behind these choices; the public entry
point is ``torchstn.sample(..., antialias=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from torchstn._checks import check_float_tensor, check_positive_int
from torchstn.coords import axis_scale_shift
from torchstn.errors import OptionError, ShapeError
from torchstn.functional.reading import check_sample_args, read_padded

__all__ = [
    "sample_antialiased",
    "grid_jacobian",
    "affine_jacobian",
    "footprint_plan",
    "TAP_SHARE",
    "MAX_TAPS",
    "TOLERANCE",
]

#: Input pixels of a footprint edge one tap stands for (the pyramid filters within a tap): 1 is pure supersampling,
#: ``inf`` a pure mip-map. Smaller is sharper and closer to the ideal area filter, and costs more taps.
TAP_SHARE = math.inf
#: At most this many taps along one footprint edge; beyond it the pyramid level rises instead.
MAX_TAPS = 8
#: Footprint edges shorter than ``1 + TOLERANCE`` input pixels count as no downsampling (absorbs rounding in the
#: finite differences, so identity, upsampling and pure rotations give plain bilinear sampling bit for bit).
TOLERANCE = 1e-3


def _inv_scales(size: Sequence[int], align_corners: bool) -> list[float]:
    """Input pixels per normalised unit along (x, y[, z]) for an input of spatial ``size``."""
    return [1.0 / a if a else 0.0 for a, _ in (axis_scale_shift(int(s), align_corners) for s in reversed(size))]


def _grid_edges(grid: torch.Tensor, in_size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """Footprint edges ``(n_out_axes, n_in_axes, B, *out)`` of a grid by finite differences (planar layout: the
    per-pixel arithmetic below then works on whole slabs instead of reducing tiny trailing dims)."""
    n = grid.shape[-1]
    scale = torch.tensor(_inv_scales(in_size, align_corners), dtype=grid.dtype, device=grid.device)
    u = (grid * scale).movedim(-1, 0)  # (n, B, *out): input pixel coordinates (up to a shift)
    cols = []
    for c in range(n):  # output axis c (x, y, z) is tensor dim -1-c of u
        dim, size = u.dim() - 1 - c, u.shape[u.dim() - 1 - c]
        if size < 2:
            cols.append(torch.zeros_like(u))
            continue
        d = u.diff(dim=dim)  # central differences inside, one-sided at the ends
        mid = (d.narrow(dim, 0, size - 2) + d.narrow(dim, 1, size - 2)) * 0.5
        cols.append(torch.cat((d.narrow(dim, 0, 1), mid, d.narrow(dim, size - 2, 1)), dim=dim))
    return torch.stack(cols)


def grid_jacobian(grid: torch.Tensor, in_size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Per-pixel footprint Jacobian of a sampling grid, by finite differences of neighbouring grid points.

    Args:
        grid: ``(B, H', W', 2)`` or ``(B, D', H', W', 3)`` normalised sampling grid.
        in_size: spatial size of the sampled input, ``(H, W)`` or ``(D, H, W)``.
        align_corners: the convention of ``grid`` (see ``docs/conventions.md``).

    Returns:
        ``J (B, *out, n, n)`` with ``J[..., r, c]`` = input pixels moved along input axis ``r`` per output pixel step
        along output axis ``c`` (axes ordered ``x, y[, z]``). Central differences inside, one-sided at the edges;
        an output axis of size 1 gives a zero column (no anti-aliasing along it: pass an explicit Jacobian).

    Example:
        >>> from torchstn.functional.affine import affine_grid
        >>> g = affine_grid(torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]), (4, 4))  # 2x zoom-out along x
        >>> grid_jacobian(g, (8, 8))[0, 1, 1]
        tensor([[4., 0.],
                [0., 2.]])
    """
    return _grid_edges(grid, in_size, align_corners).movedim(0, -1).movedim(0, -2)  # (B, *out, rows, cols)


def affine_jacobian(
    matrix: torch.Tensor, in_size: Sequence[int], out_size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Per-sample footprint Jacobian ``(B, n, n)`` of normalised output->input affine matrices ``(B, n, n+1)``.

    Exact (no finite differences) and valid for outputs of any size, including size-1 axes.

    Raises:
        ShapeError: ``matrix`` is not ``(B, 2, 3)`` or ``(B, 3, 4)``.

    Example:
        >>> m = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]]])
        >>> affine_jacobian(m, (8, 8), (2, 4))  # x: 8 input px over 4 output px; y: 4 input px over 2 output px
        tensor([[[2., 0.],
                 [0., 2.]]])
    """
    n = matrix.shape[-2]
    if matrix.dim() != 3 or n not in (2, 3) or matrix.shape[-1] != n + 1:
        raise ShapeError(f"affine matrix must be (B, 2, 3) or (B, 3, 4), got {tuple(matrix.shape)}")
    rows = torch.tensor(_inv_scales(in_size, align_corners), dtype=matrix.dtype, device=matrix.device)
    cols = torch.tensor(
        [axis_scale_shift(int(s), align_corners)[0] for s in reversed(tuple(out_size))],
        dtype=matrix.dtype,
        device=matrix.device,
    )
    return rows.view(1, n, 1) * matrix[:, :, :n] * cols.view(1, 1, n)


#: Width of the blend of :func:`_smooth_max`, relative to the mean of the two values it compares.
SMOOTH_MAX_WIDTH = 0.1


def _smooth_max(r: torch.Tensor) -> torch.Tensor:
    """Maximum over dim 0 of positive ``r (n, ...)``, rounded off where two values are within ``SMOOTH_MAX_WIDTH``
    of their mean, so that it is differentiable (C1) where they tie.

    ``max(a, b) = (a + b + |a - b|) / 2`` with ``|u|`` replaced by ``h(u) = |u| (1 - (1 - |u| / delta)^2)`` for
    ``|u| < delta = SMOOTH_MAX_WIDTH (a + b) / 2``: ``h(0) = 0`` (the value at a tie is exact), ``h = |u|`` and
    ``h' = sign(u)`` at ``|u| = delta``, and ``h <= |u|``, so the result lies between the mean and the maximum, and
    is below the maximum by at most ``0.074 delta``. An isotropic footprint (any rotation with a uniform scale) and
    an anisotropic one whose tap count divides its long edge exactly are ties of the plain maximum: there its
    derivative jumps, and the gradient was a mix of one-sided derivatives that matched no finite difference.
    """
    m = r[0]
    for v in r[1:]:
        u = (m - v).abs()
        delta = (m + v) * (SMOOTH_MAX_WIDTH / 2)
        h = torch.where(u < delta, u * (1 - (1 - u / delta.clamp_min(1e-30)).square()), u)
        m = (m + v + h) * 0.5
    return m


def _plan(edges: torch.Tensor, tap_share: float, max_taps: int, classic_level: bool = False):
    """Filter plan of footprints ``edges (n, n, B, *out)`` (planar: edge, component, pixel).

    * ``N_c = ceil(w_c / min(tap_share, w_min))`` taps along edge ``c`` (length ``w_c``; ``w_min`` the shortest
      edge of the same footprint, so anisotropic footprints get more taps along their long edge), at most
      ``max_taps``; the largest count over all pixels, as the taps of every pixel form one tensor.
    * Each tap then stands for ``q = max_c w_c / N_c`` input pixels (a maximum rounded off near ties, see
      :func:`_smooth_max`, so the level is differentiable at isotropic footprints), and the level is
      ``log2 sqrt((q^2 + 1) / 2)``: 0 at ``q = 1``, the classic mip-map level ``log2 q`` less half a level for
      large ``q``. A bilinear read at
      level ``l`` is a box ``2^l`` then a tent ``2^l`` (variance ``4^l / 4``), and this level gives it about 1.5x
      the variance of a box ``q`` wide; exact variance matching (1x) and the classic level (3x) both measured
      worse (``docs/antialias.md``).
    * The taps spread along each edge so that their comb adds the variance still missing to a box as wide as the
      edge: spacing ``d_c`` with ``d_c^2 (N_c^2 - 1) = w_c^2 - q^2`` (``d_c = q`` on the most demanding edge).

    Returns ``level (B, *out)``, ``spans (n, B, *out)`` (tap spread along each edge, input px, or ``None``), edge
    lengths ``w (n, B, *out)`` (at least 1) and the tap counts.
    """
    # squared edge lengths (n, B, *out), at least 1; few ops: on CPU this per-pixel arithmetic costs as much as a read
    w2 = edges.square().sum(dim=1)
    w2 = torch.where(w2 > (1.0 + TOLERANCE) ** 2, w2, 1.0)
    with torch.no_grad():  # a tap covers at most tap_share px, and no more than the shortest edge (anisotropy)
        need2 = (w2 / w2.amin(dim=0).clamp_max(tap_share**2)).flatten(1).amax(dim=1)
    counts = [min(max_taps, max(1, math.ceil(math.sqrt(v) - 1e-3))) for v in need2.tolist()]  # 2.0000002 -> 2
    k = w2.new_tensor(counts).view(-1, *([1] * (w2.dim() - 1)))  # (n, 1, ..)
    q2 = _smooth_max(w2 / k.square() if max(counts) > 1 else w2)  # (px per tap)^2
    if max(counts) > 1:
        q2 = q2.clamp_min(1.0)
    level = torch.log2(q2 if classic_level else q2 * 0.5 + 0.5) * 0.5  # log2 sqrt((q^2 + 1) / 2)
    if max(counts) == 1:
        return level, None, None, counts
    w = w2.sqrt()
    var = F.relu(w2 - q2)  # 12 x the variance left for the taps, per edge
    d = torch.where(var > 0, (var.clamp_min(1e-30) / (k * k - 1).clamp_min(1.0)).sqrt(), 0.0)
    return level, d * (k - 1), w, counts


def footprint_plan(
    jacobian: torch.Tensor, *, tap_share: float = TAP_SHARE, max_taps: int = MAX_TAPS
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The filter :func:`torchstn.sample` with ``antialias=True`` applies for footprint Jacobians ``(B, n, n)`` (per
    sample) or ``(B, *out, n, n)`` (per pixel).

    Returns:
        ``level (B[, *out])``: continuous pyramid level (0 = full resolution, ``l`` = boxes of ``2^l`` pixels);
        ``span (B[, *out], n)``: how far the taps spread along each footprint edge, in input pixels; the tap counts.

    Example:
        >>> J = torch.diag(torch.tensor([4.0, 1.0])).view(1, 2, 2)  # 4x zoom-out in x, none in y
        >>> level, span, taps = footprint_plan(J)
        >>> level.tolist(), span.tolist(), taps  # 4 taps 1 px apart along x, at full resolution
        ([0.0], [[3.0, 0.0]], [4, 1])
        >>> level, span, taps = footprint_plan(4 * torch.eye(2).view(1, 2, 2))  # 4x in both: one read, level ~1.54
        >>> round(level.item(), 2), span.tolist(), taps
        (1.54, [[0.0, 0.0]], [1, 1])
        >>> level, span, taps = footprint_plan(4 * torch.eye(2).view(1, 2, 2), tap_share=2.0)  # sharper: 2 x 2 taps
        >>> round(level.item(), 2), span.tolist(), taps
        (0.66, [[2.0, 2.0]], [2, 2])
    """
    level, spans, _, counts = _plan(jacobian.movedim(-1, 0).movedim(-1, 1), tap_share, max_taps)
    spans = torch.zeros_like(level).unsqueeze(0).expand(len(counts), *level.shape) if spans is None else spans
    return level, spans.movedim(0, -1), counts


def _tap_offsets(edges: torch.Tensor, spans: torch.Tensor, w: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Offsets ``(B, T, *out, n)`` in input pixels of the ``T = prod(counts)`` taps of every footprint."""
    offsets = None  # (T, n, B, *out)
    for c, k in enumerate(counts):
        if k == 1:
            continue
        edge = edges[c] * (spans[c] / w[c])  # (n, B, *out): the edge shortened to the taps' spread
        pos = torch.linspace(-0.5, 0.5, k, dtype=edges.dtype, device=edges.device).view(k, *([1] * edge.dim()))
        along = pos * edge  # (k, n, B, *out)
        offsets = along if offsets is None else (offsets.unsqueeze(1) + along.unsqueeze(0)).flatten(0, 1)
    assert offsets is not None  # the caller has spans only where _plan found a count above 1: the loop set it
    return offsets.movedim(1, -1).movedim(0, 1)  # (B, T, *out, n)


class _Halve(torch.autograd.Function):
    """2x2 area mean of an even-sized ``(B, C, H, W)`` image. On CPU, four strided adds and a nearest-neighbour
    upsampling backward are 2-3x faster than ``avg_pool2d``, whose backward zero-fills and scatters."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = x[..., 0::2, 0::2] + x[..., 1::2, 0::2]
        out += x[..., 0::2, 1::2]
        out += x[..., 1::2, 1::2]
        return out.mul_(0.25)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return F.interpolate(grad * 0.25, scale_factor=2, mode="nearest")


def _pool(x: torch.Tensor, k: int, pad_zeros: bool) -> torch.Tensor:
    """``k x k (x k)`` area average; a partial block at an odd edge averages its pixels (or zeros, ``pad_zeros``)."""
    if pad_zeros and any(s % k for s in x.shape[2:]):
        pads = []
        for s in reversed(x.shape[2:]):
            pads += [0, -s % k]
        x = F.pad(x, pads)
    if x.dim() == 4 and all(s % k == 0 for s in x.shape[2:]):  # k is a power of 2: halve log2(k) times
        for _ in range(k.bit_length() - 1):
            x = _Halve.apply(x)
        return x
    if x.dim() == 4:
        return F.avg_pool2d(x, k, ceil_mode=True)
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):  # no CPU avg_pool3d kernel for these
        return F.avg_pool3d(x.float(), k, ceil_mode=True).to(x.dtype)
    return F.avg_pool3d(x, k, ceil_mode=True)


def _read(img, g, padding_mode, align_corners):
    """Bilinear reads at ``g (B, *out, n)`` or, with taps, ``(B, T, *out, n)``; returns tap means ``(B, C, *out)``."""
    if g.dim() == img.dim():
        return F.grid_sample(img, g, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    B, T, out_size = g.shape[0], g.shape[1], g.shape[2:-1]
    g = g.reshape(B, T * out_size[0], *out_size[1:], g.shape[-1])  # taps stacked along the first output axis
    v = F.grid_sample(img, g, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    return v.view(B, v.shape[1], T, *out_size).mean(dim=2)


def _sample_antialiased(
    input, grid, jac, padding_mode, align_corners, *, tap_share=TAP_SHARE, max_taps=MAX_TAPS, classic_level=False
):
    """Core of ``sample(..., antialias=True)`` for zero/border/reflection padding (fill is reduced to zeros)."""
    in_size = tuple(input.shape[2:])
    edges = _grid_edges(grid, in_size, align_corners) if jac is None else jac.movedim(-1, 0).movedim(-1, 1)
    # level (B, *out), or (B, 1, .., 1) for per-sample Jacobians
    level, spans, w, counts = _plan(edges, tap_share, max_taps, classic_level)
    top = max(1, math.ceil(math.log2(max(in_size))))  # a level of a single pixel
    lo, hi = (float(v) for v in torch.aminmax(level.detach()))
    if hi > top:  # footprints larger than the image read its single-pixel level
        level, lo, hi = level.clamp(max=top), min(lo, top), top
    lo, hi = math.floor(lo), math.ceil(hi)
    if hi == 0 and spans is None:  # nothing downsamples: plain bilinear, bit for bit
        return F.grid_sample(input, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)

    offsets = None if spans is None else _tap_offsets(edges, spans, w, counts)  # (B, T, *out, n) input pixels
    ab = [axis_scale_shift(s, align_corners) for s in reversed(in_size)]  # normalised = a * pixel + b, per axis
    zeros = padding_mode == "zeros"
    reads = []
    img = input
    for lev in range(lo, hi + 1):
        if lev == 0:  # full resolution, in the caller's convention
            g = grid if offsets is None else grid.unsqueeze(1) + offsets * grid.new_tensor([a for a, _ in ab])
            reads.append(_read(input, g, padding_mode, align_corners))
            continue
        img = _pool(img, 2**lev if lev == lo else 2, zeros)  # the first level straight from the input
        # level pixel k covers input pixels [k 2^l, (k+1) 2^l): normalised x_l = (u + 0.5) 2 / (2^l W_l) - 1
        s_l = [2.0 / (2**lev * s) for s in reversed(img.shape[2:])]
        scale = grid.new_tensor([s / a if a else 0.0 for (a, _), s in zip(ab, s_l)])
        shift = grid.new_tensor([(0.5 - b / a if a else 0.5) * s - 1.0 for (a, b), s in zip(ab, s_l)])
        g = torch.addcmul(shift, grid, scale)
        if offsets is not None:
            g = g.unsqueeze(1) + offsets * grid.new_tensor(s_l)
        reads.append(_read(img, g, padding_mode, False))
    if lo == hi:
        return reads[0]
    frac = (level - lo).unsqueeze(1)  # (B, 1, *out)
    if hi == lo + 1:  # trilinear: blend the two levels around every pixel's level
        return torch.lerp(reads[0], reads[1], frac)
    return sum(F.relu(1.0 - (frac - i).abs()) * v for i, v in enumerate(reads))


def sample_antialiased(
    input: torch.Tensor,
    grid: torch.Tensor,
    *,
    padding_mode: str = "zeros",
    fill_value: float | torch.Tensor = 0.0,
    align_corners: bool = False,
    jacobian: torch.Tensor | None = None,
    tap_share: float = TAP_SHARE,
    max_taps: int = MAX_TAPS,
) -> torch.Tensor:
    """Anti-aliased bilinear sampling with its quality/speed knob; ``torchstn.sample(..., antialias=True)`` is this
    with the defaults (and that function's ``check_finite``).

    Args:
        input: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` floating-point tensor.
        grid: ``(B, *out, n)`` normalised sampling grid (batch 1 is shared), as for :func:`torchstn.sample`.
        padding_mode, fill_value, align_corners: as for :func:`torchstn.sample`. At pyramid levels above 0,
            ``"border"`` and ``"reflection"`` act on the level image (exact for ``"zeros"`` and ``"fill"``).
        jacobian: the footprint ``d(input pixel) / d(output pixel)``, ``(B, n, n)`` per sample (see
            :func:`affine_jacobian`) or ``(B, *out, n, n)`` per pixel; ``None`` uses :func:`grid_jacobian`.
        tap_share: input pixels of a footprint edge that one tap covers. ``inf`` (default): a mip-map, with extra
            taps only along the long edge of anisotropic footprints; ``2``: about 8 dB sharper and closer to the
            area filter, at 2-3x the cost; ``1``: supersampling at full resolution (best, slowest). See
            ``docs/antialias.md``.
        max_taps: most taps along one edge (then the pyramid level rises instead).

    Returns:
        ``(B, C, *out)`` in the dtype of ``input``.

    Raises:
        DTypeError: non-float tensors.
        ShapeError: ranks, grid or jacobian shapes that do not match.
        OptionError: unknown ``padding_mode``, ``tap_share < 1`` or ``max_taps < 1``.

    Example:
        >>> from torchstn.coords import identity_grid
        >>> stripes = (torch.arange(16.0) % 2).expand(1, 1, 4, 16)  # 1-pixel stripes along x
        >>> sample_antialiased(stripes, identity_grid((4, 4)), tap_share=1.0)[0, 0, 0]  # 4x along x only
        tensor([0.5000, 0.5000, 0.5000, 0.5000])
    """
    grid = check_sample_args(input, grid, "bilinear", padding_mode, fill_value, align_corners)
    if not float(tap_share) >= 1.0:
        raise OptionError(f"tap_share must be >= 1 input pixel (inf for a plain mip-map), got {tap_share!r}")
    max_taps = check_positive_int("max_taps", max_taps)
    return antialiased_sample(
        input, grid, padding_mode, fill_value, align_corners, jacobian, float(tap_share), max_taps
    )


def _check_jacobian(jacobian: torch.Tensor | None, input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor | None:
    """A user Jacobian ``(B, n, n)`` or ``(B, *out, n, n)`` as ``(B, *out or 1s, n, n)`` in the dtype of ``input``."""
    if jacobian is None:
        return None
    n, B = input.dim() - 2, input.shape[0]
    check_float_tensor("jacobian", jacobian)
    if jacobian.shape[-2:] != (n, n) or jacobian.dim() not in (3, n + 3) or jacobian.shape[0] not in (1, B):
        raise ShapeError(
            f"jacobian must be (B, {n}, {n}) or (B, *out, {n}, {n}) for a {n}D sample, got {tuple(jacobian.shape)}"
        )
    if jacobian.dim() == 3:
        jacobian = jacobian.view(jacobian.shape[0], *([1] * n), n, n)
    elif tuple(jacobian.shape[1:-2]) != tuple(grid.shape[1:-1]):
        raise ShapeError(f"per-pixel jacobian {tuple(jacobian.shape)} does not match grid {tuple(grid.shape)}")
    return jacobian.to(input.dtype).expand(B, *jacobian.shape[1:])


def antialiased_sample(
    input, grid, padding_mode, fill_value, align_corners, jacobian, tap_share=TAP_SHARE, max_taps=MAX_TAPS
):
    """Checked arguments (``grid`` batch == ``input`` batch) -> the anti-aliased sample, in the dtype of ``input``."""
    work = torch.promote_types(grid.dtype, input.dtype)
    x, g = input.to(work), grid.to(work)
    jac = _check_jacobian(jacobian, x, g)

    def read(img, padding, grid):
        j = None if jac is None else jac.to(grid.dtype)
        return _sample_antialiased(img, grid, j, padding, align_corners, tap_share=tap_share, max_taps=max_taps)

    return read_padded(x, g, "bilinear", padding_mode, fill_value, align_corners, read).to(input.dtype)
