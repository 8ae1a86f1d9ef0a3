"""Trilinear sampling of an extruded slab, computed only where the slab is (the 3D distortion's fast path).

The 3D distortion samples the volume ``V(x, y, z) = I(x, y)`` for ``0 <= z <= depth - 1`` (zero elsewhere), the
digit ``I (28, 28)`` extruded along z, trilinearly with zero padding through an affine output->input map. Along z the
volume is constant inside the slab, so the two z taps of a trilinear read share one bilinear read of ``I`` and their
weights add up to the **z weight**

    ``w(p_z) = clamp(min(p_z + 1, depth - p_z), 0, 1)``    (``p_z`` in input voxels: 1 inside, linear at the faces)

and trilinear sampling equals ``bilinear(I, p_x, p_y) * w(p_z)``: 4 taps instead of 8 and no 3D input volume.

Most of the output lies outside the turned slab, where the result is exactly zero. Each output row (fixed volume,
``z``, ``y``; running along ``x``) meets the slab's support ``-1 < p_d < n_d`` (``n = (28, 28, depth)``) in one interval
of ``x``, since ``p`` is affine in the output voxel. :func:`row_spans` finds these intervals (with a safety margin),
:func:`sample_slab` covers them with windows of ``WINDOW`` voxels and samples only those points; the rest of the output
stays zero. A window never leaves its row (its start is clamped), so two windows of one row may overlap; every point
is computed from its row's reference point and its integer offset alone, so overlapping windows write identical
values. The points per volume are padded to the batch's maximum (padding points read far outside the digit, are
exactly zero and are written to a scratch tail of the output's storage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["WINDOW", "row_spans", "sample_slab"]

#: Output voxels sampled per window (a row's span is covered by ceil(length / WINDOW) windows).
WINDOW = 16
_F64 = torch.float64
_MARGIN = 0.5  # input voxels added to every side of the support when finding the spans (they sample exact zeros)
_TINY = 1e-12  # |slope| floor: a row parallel to a face is then inside or outside along its whole length
_FAR = -4.0  # normalised coordinate of the padding points: no tap of theirs reaches the digit


def pixel_map(matrix: torch.Tensor, canvas: int, in_size: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised output->input ``matrix (B, 3, 4)`` as a map from output voxel indices to input voxels.

    Returns ``A (B, 3, 3)`` and ``t (B, 3)`` (float64) with ``p = A @ (i, j, k) + t``, where ``(i, j, k)`` are the
    output's ``(x, y, z)`` voxel indices and ``p`` the input's ``(x, y, z)`` voxel coordinates for
    ``align_corners=False`` and ``in_size = (n_x, n_y, n_z)``.

    Example:
        >>> m = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.float64).expand(1, 3, 4)
        >>> A, t = pixel_map(m, 8, (8, 8, 8))  # identity at equal sizes: voxel i reads voxel i
        >>> A[0].diagonal().tolist(), t[0].tolist()
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    """
    m = matrix.to(_F64)
    half = torch.tensor(in_size, dtype=_F64, device=m.device).div(2.0).view(1, 3, 1)  # (1, 3, 1) n_d / 2
    lin = m[..., :3]  # (B, 3, 3)
    shift = m[..., 3] + (1.0 / canvas - 1.0) * lin.sum(-1)  # (B, 3): normalised input at output voxel (0, 0, 0)
    A = half * lin * (2.0 / canvas)
    t = half[..., 0] * shift + (half[..., 0] - 0.5)
    return A, t


def row_spans(A: torch.Tensor, t: torch.Tensor, canvas: int, in_size: tuple[int, int, int]) -> torch.Tensor:
    """First and last output ``x`` of each row ``(B, z, y)`` that may be nonzero, ``(2, B, S, S)`` int64.

    A row is empty where the last is below the first. The spans include every voxel with ``-1 < p_d < n_d`` for all
    three input dims, plus a margin of half an input voxel.

    Example:
        >>> A = torch.eye(3, dtype=torch.float64).unsqueeze(0)
        >>> spans = row_spans(A, torch.tensor([[-2.0, 0.0, 0.0]], dtype=torch.float64), 8, (3, 3, 3))
        >>> spans[:, 0, 0, 0].tolist()  # p_x = i - 2 in (-1.5, 3.5) (support plus the margin): i in 1..5
        [1, 5]
        >>> bool((spans[1, 0, 4] < spans[0, 0, 4]).all())  # the plane z = 4 (p_z = 4) misses the support
        True
    """
    B, S = A.shape[0], canvas
    r = torch.arange(S, dtype=_F64, device=A.device)
    lows, highs = [], []
    for d in range(3):
        a = A[:, d, 0]
        a = torch.where(a < 0, torch.clamp(a, max=-_TINY), torch.clamp(a, min=_TINY))  # (B,), never 0
        lo, hi = (-1.0 - _MARGIN - t[:, d]) / a, (in_size[d] + _MARGIN - t[:, d]) / a  # (B,) at j = k = 0
        slope_j, slope_k = (-A[:, d, 1] / a).view(B, 1, 1), (-A[:, d, 2] / a).view(B, 1, 1)
        base = slope_k * r.view(1, S, 1) + slope_j * r.view(1, 1, S)  # (B, S_z, S_y)
        lows.append(base + torch.minimum(lo, hi).view(B, 1, 1))
        highs.append(base + torch.maximum(lo, hi).view(B, 1, 1))
    first = torch.maximum(torch.maximum(lows[0], lows[1]), lows[2]).clamp_(-1.0, S).ceil_().clamp_(min=0)
    last = torch.minimum(torch.minimum(highs[0], highs[1]), highs[2]).clamp_(-1.0, S).floor_().clamp_(max=S - 1)
    return torch.stack((first, last)).long()


def _windows(spans: torch.Tensor, width: int) -> tuple[torch.Tensor, ...]:
    """Cover the nonempty spans ``(2, B, S, S)`` with windows of ``width`` voxels.

    Returns the nonempty rows ``(R,)`` (flat ``(b, z, y)`` ids) and their first ``x`` ``(R,)``; then each window's row
    ``(Nw,)`` as an index into them, its start ``x`` (clamped so that it stays in its row) and its offset from its
    row's first ``x`` (``(Nw,)`` each).
    """
    S = spans.shape[-1]
    first = spans[0].reshape(-1)  # (B S S,)
    count = ((spans[1].reshape(-1) - first + width) // width).clamp_(min=0)  # windows per row
    rows = count.nonzero().squeeze(1)  # (R,)
    per_row = count[rows]
    row_of = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), per_row)  # (Nw,)
    rank = torch.arange(row_of.numel(), device=rows.device) - (per_row.cumsum(0) - per_row)[row_of]
    rows_first = first[rows]
    row_first = rows_first[row_of]
    start = (row_first + rank * width).clamp_(max=S - width)
    return rows, rows_first, row_of, start, start - row_first


def _row_points(rows: torch.Tensor, first: torch.Tensor, A: torch.Tensor, t: torch.Tensor, S: int) -> torch.Tensor:
    """Input voxel coordinates ``(R, 3)`` (float64) of each row's first voxel, from flat ``(b, z, y)`` row ids."""
    b, k, j = rows // (S * S), (rows // S) % S, rows % S
    idx = torch.stack((first, j, k), dim=1).to(_F64)  # (R, 3) output (x, y, z)
    Ab = A[b]  # (R, 3, 3)
    return Ab[..., 0] * idx[:, :1] + Ab[..., 1] * idx[:, 1:2] + Ab[..., 2] * idx[:, 2:] + t[b]  # (R, 3)


def _slots(values: torch.Tensor, fill: float, key: torch.Tensor, size: int) -> torch.Tensor:
    """``values (Nw, ...)`` placed at flat slots ``key`` of a ``(size, ...)`` tensor filled with ``fill``."""
    out = values.new_full((size, *values.shape[1:]), fill)
    out[key] = values
    return out


def _sample_chunk(out, images, A, t, offset: int, S: int, depth: int, width: int, work: torch.dtype) -> None:
    """Sample volumes ``offset ..`` of the batch (``images (b, 1, h, w)``, ``A``, ``t``) into the flat ``out``."""
    b, (h, w) = images.shape[0], images.shape[-2:]
    rows, rows_first, row_of, start, shift = _windows(row_spans(A, t, S, (w, h, depth)), width)
    ref = _row_points(rows, rows_first, A, t, S)[row_of]  # (Nw, 3) input voxels
    vol = rows[row_of] // (S * S)  # (Nw,) volume of each window in the chunk
    count = torch.bincount(vol, minlength=b)
    P = max(int(count.max()), 1) if vol.numel() else 1
    key = vol * P + torch.arange(vol.numel(), device=vol.device) - (count.cumsum(0) - count)[vol]  # (Nw,) slot ids
    size = (torch.tensor([w, h], dtype=_F64, device=ref.device) / 2.0).view(1, 2)
    norm = (ref[:, :2] + 0.5) / size - 1.0  # (Nw, 2) normalised (x, y) of each window's row reference
    ref_xy = _slots(norm.to(work), _FAR, key, b * P).view(b, P, 1, 2)
    ref_z = _slots(ref[:, 2].to(work) + 1.0, -1e3, key, b * P).view(b, P, 1)  # p_z + 1
    step = torch.stack((A[:, 0, 0] / size[0, 0], A[:, 1, 0] / size[0, 1]), dim=1).to(work).view(b, 1, 1, 2)
    u = _slots(shift.to(work), 0.0, key, b * P).view(b, P, 1) + torch.arange(width, dtype=work, device=A.device)
    grid = (u.unsqueeze(-1) * step).add_(ref_xy)  # (b, P, W, 2) normalised (x, y)
    z1 = (u * A[:, 2, 0].to(work).view(b, 1, 1)).add_(ref_z)  # (b, P, W) p_z + 1
    weight = torch.minimum(z1, (depth + 1.0) - z1).clamp_(0.0, 1.0)  # the z weight
    flat = ((offset * S * S + rows[row_of]) * S + start) if vol.numel() else start  # (Nw,) into out
    base = _slots(flat, out.numel() - width, key, b * P).view(b, P, 1)
    value = F.grid_sample(images.to(work), grid.view(b, 1, P * width, 2), align_corners=False)
    value = value.view(b, P, width).mul_(weight)
    if work == _F64:  # as torchstn.data.distortions.distortion.warp: flush residues, then one rounding
        value = torch.where(value.abs() < 1e-10, torch.zeros((), dtype=_F64, device=value.device), value)
    # put_: a plain scatter, cheaper than advanced-index assignment; duplicate targets receive identical values
    out.put_(base + torch.arange(width, device=base.device), value.to(out.dtype).clamp_(0.0, 1.0))


def sample_slab(
    images: torch.Tensor, matrix: torch.Tensor, canvas: int, depth: int, compute_dtype=None, chunk: int = 256
) -> torch.Tensor:
    """Trilinear, zero-padded sample of ``images (B, 1, h, w)`` extruded ``depth`` voxels along z, to a ``canvas^3``
    volume through normalised output->input matrices ``matrix (B, 3, 4)``.

    Equals ``grid_sample(volume, affine_grid(matrix, (B, 1, S, S, S)))`` (``align_corners=False``) of the extruded
    volume ``(B, 1, depth, h, w)`` up to rounding (see the module docstring). Points are computed in
    ``compute_dtype`` (default: the images' dtype); float64 results are flushed below ``1e-10`` and rounded once, as
    :func:`~torchstn.data.distortions.distortion.warp` does. The result is in the images' dtype, clamped to
    ``[0, 1]``; ``chunk`` volumes are sampled at a time.

    Example:
        >>> m = torch.tensor([[[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]]])  # the digit fills half the volume
        >>> out = sample_slab(torch.ones(1, 1, 28, 28), m, canvas=8, depth=4)
        >>> out.shape, out[0, 0, :, 4, 4].tolist()
        (torch.Size([1, 1, 8, 8, 8]), [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    """
    B, S = images.shape[0], canvas
    width = min(WINDOW, S)
    work = compute_dtype or images.dtype
    A, t = pixel_map(matrix, S, (images.shape[-1], images.shape[-2], depth))
    out = images.new_zeros(B * S**3 + width)  # the tail is the padding points' scratch
    for start in range(0, B, chunk):
        sl = slice(start, start + chunk)
        _sample_chunk(out, images[sl], A[sl], t[sl], start, S, depth, width, work)
    return out[: B * S**3].view(B, 1, S, S, S)
