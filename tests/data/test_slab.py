"""The 3D distortion's slab sampler against the plain trilinear reference: ``F.affine_grid`` + ``F.grid_sample`` in
float64 of the extruded ``(B, 1, depth, 28, 28)`` volume, on the same ``Extrude3D.matrix``.

The float32 path must agree to float32 rounding of the grid (the old float32 path, a full 3D grid, was off by up to
4e-6); the float64 path (how fixed sets are rendered) to one float32 rounding of the result.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchstn.data.distortions import Extrude3D
from torchstn.data.distortions.slab import WINDOW, pixel_map, row_spans, sample_slab
from torchstn.data.synthetic import synthetic_digits

F64 = torch.float64
TOL32 = 1e-5  # float32 grid: about 14 pixels * 1e-7 normalised per rounding, a few roundings
TOL64 = 6e-8  # half a float32 ulp at 1: one rounding of the float64 result


def _digits(n: int, seed: int = 0) -> torch.Tensor:
    images, _ = synthetic_digits(n, seed)
    x = images.float().div(255.0).unsqueeze(1)  # (n, 1, 28, 28)
    return x * torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)).add_(0.5).clamp_(max=1.0)


def reference(vol: Extrude3D, x: torch.Tensor, params) -> torch.Tensor:
    """Trilinear, zero-padded, float64: the extruded volume read through the full 3D grid."""
    B, S = x.shape[0], vol.canvas
    volume = x.to(F64).unsqueeze(2).expand(B, 1, vol.depth, 28, 28)  # (B, 1, depth, 28, 28)
    grid = F.affine_grid(vol.matrix(params), [B, 1, S, S, S], align_corners=False)  # (B, S, S, S, 3)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _check(vol: Extrude3D, x: torch.Tensor, params) -> None:
    ref = reference(vol, x, params)
    out32, out64 = vol.apply(x, params), vol.apply(x, params, compute_dtype=F64)
    assert out32.dtype == out64.dtype == torch.float32 and out32.shape == ref.shape
    assert float((out32.to(F64) - ref).abs().max()) <= TOL32
    assert float((out64.to(F64) - ref).abs().max()) <= TOL64


@pytest.mark.parametrize(
    ("canvas", "depth", "placement"),
    [(60, 14, "box"), (60, 14, "anywhere"), (40, 6, "centred"), (24, 4, "anywhere"), (12, 3, "anywhere")],
)
def test_random_params_match_the_reference(canvas, depth, placement):
    vol = Extrude3D(canvas=canvas, depth=depth, placement=placement)
    x = _digits(6, seed=canvas)
    _check(vol, x, vol.sample_params(torch.Generator().manual_seed(canvas + depth), 6))


def test_edge_cases_match_the_reference():
    """Faces parallel to the rows (no rotation, quarter turns: zero slopes), large tilts, slabs touching the border
    or corner of the volume, cut by it, or entirely outside it (a chunk without any window)."""
    S, depth = 40, 6
    vol = Extrude3D(canvas=S, depth=depth, chunk=3)
    angles = [(0, 0, 0), (0, 0, 90), (90, 0, 0), (0, 90, 0), (45, 45, 45), (-30, 30, -30), (180, 0, 0), (0, 0, 0)]
    angles += [(0, 0, 0), (10, -20, 30), (0, 0, 0), (0, 0, 0)]
    lo = (13.5, 13.5, depth / 2 - 0.5)  # the unrotated slab touches the faces x = y = z = -0.5
    hi = (S - 14.5, S - 14.5, S - depth / 2 - 0.5)  # ... and x = y = z = S - 0.5
    centres = [(19.5, 19.5, 19.5)] * 6 + [lo, hi, (0.0, 0.0, 0.0), (S - 1.0, 3.0, S - 1.0), (-40, 20, 20), (20, 20, 90)]
    params = {"angle": torch.tensor(angles, dtype=F64), "centre": torch.tensor(centres, dtype=F64)}
    x = _digits(len(angles))
    x[6:9] = 1.0  # full slabs: every face and edge is ink
    _check(vol, x, params)
    out = vol.apply(x, params, compute_dtype=F64)
    assert float(out[6, 0, :depth, :28, :28].min()) == 1.0 and float(out[6].sum()) == 28 * 28 * depth
    assert float(out[10:].abs().max()) == 0.0


def test_result_does_not_depend_on_chunk_or_batch():
    vol = Extrude3D(canvas=32, depth=5)
    x = _digits(5)
    params = vol.sample_params(torch.Generator().manual_seed(3), 5)
    out = vol.apply(x, params, compute_dtype=F64)
    assert torch.equal(out, Extrude3D(canvas=32, depth=5, chunk=2).apply(x, params, compute_dtype=F64))
    alone = Extrude3D(canvas=32, depth=5).apply(x[3:4], {k: v[3:4] for k, v in params.items()}, compute_dtype=F64)
    assert torch.equal(out[3:4], alone)
    assert vol.apply(x[:0], {k: v[:0] for k, v in params.items()}).shape == (0, 1, 32, 32, 32)


def test_row_spans_cover_every_nonzero_voxel_and_little_else():
    vol = Extrude3D()
    params = vol.sample_params(torch.Generator().manual_seed(0), 4)
    A, t = pixel_map(vol.matrix(params), 60, (28, 28, 14))
    first, last = row_spans(A, t, 60, (28, 28, 14))  # (B, S, S) each
    i = torch.arange(60).view(1, 1, 1, 60)
    inside = (i >= first.unsqueeze(-1)) & (i <= last.unsqueeze(-1))  # (B, z, y, x)
    ones = reference(vol, torch.ones(4, 1, 28, 28), params)[:, 0]  # nonzero exactly on the support
    assert not bool((ones.ne(0) & ~inside).any())
    assert int(inside.sum()) < 1.3 * int(ones.ne(0).sum())  # half a voxel of margin per face
    assert 1 <= WINDOW <= 60


def test_sample_slab_takes_any_image_size():
    vol = Extrude3D(canvas=16, depth=3)
    params = vol.sample_params(torch.Generator().manual_seed(5), 2)
    x = torch.rand(2, 1, 12, 20, generator=torch.Generator().manual_seed(5))  # (B, 1, h, w): not a digit's 28x28
    m = vol.matrix(params)
    grid = F.affine_grid(m, [2, 1, 16, 16, 16], align_corners=False)
    ref = F.grid_sample(x.to(F64).unsqueeze(2).expand(2, 1, 3, 12, 20), grid, align_corners=False)
    out = sample_slab(x, m, canvas=16, depth=3, compute_dtype=F64)
    assert float(ref.abs().max()) > 0.5 and float((out.to(F64) - ref).abs().max()) <= TOL64
