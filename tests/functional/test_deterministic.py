"""The deterministic sampler path (``sample(..., deterministic=True)``): parity with ``F.grid_sample``, gradients,
run-to-run bitwise equality, the automatic choice under torch's deterministic mode, and option errors.

The CUDA cases run where a GPU is available and are skipped otherwise (the CUDA behaviour is what the path is for).
"""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
import torch.nn.functional as F

import torchstn
from torchstn.coords import identity_grid
from torchstn.errors import OptionError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
PADDINGS = ("zeros", "border", "reflection")
# (input shape, grid shape): 2D and 3D, non-square, output size differs from the input size
SHAPES = {2: ((2, 3, 6, 7), (2, 4, 5, 2)), 3: ((2, 2, 4, 5, 3), (2, 3, 2, 4, 3))}


@pytest.fixture(autouse=True)
def _restore_deterministic_mode():
    """Tests switch torch's (process-wide) deterministic mode; leave it as found."""
    mode, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(mode, warn_only=warn)


def _case(rank, device="cpu", dtype=torch.float64, spread=1.6, seed=0):
    """Input, grid (some points outside the input) and an output gradient, seeded."""
    gen = torch.Generator().manual_seed(seed)
    in_shape, grid_shape = SHAPES[rank]
    U = torch.rand(in_shape, generator=gen, dtype=dtype)
    grid = (torch.rand(grid_shape, generator=gen, dtype=dtype) * 2 - 1) * spread
    grad_out = torch.randn(in_shape[:2] + grid_shape[1:-1], generator=gen, dtype=dtype)
    return U.to(device), grid.to(device), grad_out.to(device)


def _forward_backward(fn, U, grid, grad_out):
    U, grid = U.clone().requires_grad_(), grid.clone().requires_grad_()
    out = fn(U, grid)
    return (out, *torch.autograd.grad(out, (U, grid), grad_out))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize(
    "mode,padding_mode,align_corners", list(itertools.product(("bilinear", "nearest"), PADDINGS, (False, True)))
)
def test_matches_grid_sample_forward_and_backward(device, rank, mode, padding_mode, align_corners):
    U, grid, grad_out = _case(rank, device)
    opts = {"mode": mode, "padding_mode": padding_mode, "align_corners": align_corners}
    ours = _forward_backward(lambda u, g: torchstn.sample(u, g, deterministic=True, **opts), U, grid, grad_out)
    ref = _forward_backward(lambda u, g: F.grid_sample(u, g, **opts), U, grid, grad_out)
    for name, a, b in zip(("output", "input grad", "grid grad"), ours, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_fill_padding_matches_the_default_path(rank, mode):
    U, grid, grad_out = _case(rank)
    fill = torch.linspace(-0.5, 2.0, U.shape[1], dtype=U.dtype)  # per channel
    opts = {"mode": mode, "padding_mode": "fill", "fill_value": fill}
    ours = _forward_backward(lambda u, g: torchstn.sample(u, g, deterministic=True, **opts), U, grid, grad_out)
    ref = _forward_backward(lambda u, g: torchstn.sample(u, g, deterministic=False, **opts), U, grid, grad_out)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("padding_mode,align_corners", list(itertools.product(PADDINGS, (False, True))))
def test_grid_gradient_on_pixel_centres_matches_grid_sample(rank, padding_mode, align_corners):
    # points exactly on pixel centres (identity grids, whole-pixel shifts) and the last one of each axis: border and
    # reflection clip there, where F.grid_sample's grid gradient is 0 (torch.clamp's was 1: core-fuzz F1)
    U, grid, grad_out = _case(rank, spread=1.3, seed=3)
    lattice = (grid * 4).round() / 4  # quarter-pixel lattices hit the pixel centres and the bounds
    ident = identity_grid(U.shape[2:], align_corners, dtype=U.dtype).expand(U.shape[0], *U.shape[2:], rank)
    opts = {"padding_mode": padding_mode, "align_corners": align_corners}
    for g, go in ((lattice, grad_out), (ident, torch.randn(U.shape, dtype=U.dtype))):
        ours = _forward_backward(lambda u, g: torchstn.sample(u, g, deterministic=True, **opts), U, g, go)
        ref = _forward_backward(lambda u, g: F.grid_sample(u, g, **opts), U, g, go)
        for name, a, b in zip(("output", "input grad", "grid grad"), ours, ref):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_single_pixel_input_gives_a_zero_grid_gradient(padding_mode, align_corners):
    # a 1x1 input: F.grid_sample's grid gradient is zeros (reflection with align_corners=True used to leave the
    # grid out of the graph: no .grad at all, core-fuzz F7)
    gen = torch.Generator().manual_seed(0)
    for shape, gshape in (((1, 1, 1, 1), (1, 2, 2, 2)), ((1, 2, 1, 1, 1), (1, 2, 1, 2, 3))):
        U = torch.rand(shape, generator=gen, dtype=torch.float64)
        grid = torch.rand(gshape, generator=gen, dtype=torch.float64) * 2 - 1
        go = torch.randn(shape[:2] + gshape[1:-1], generator=gen, dtype=torch.float64)
        opts = {"padding_mode": padding_mode, "align_corners": align_corners}
        ours = _forward_backward(lambda u, g, o=opts: torchstn.sample(u, g, deterministic=True, **o), U, grid, go)
        ref = _forward_backward(lambda u, g, o=opts: F.grid_sample(u, g, **o), U, grid, go)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("padding_mode", ["border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_spatial_transformer_at_identity_init_same_theta_gradient(padding_mode, align_corners):
    # the user path of F1: at its identity init every output pixel reads an input pixel centre, including the last
    # row and column, where the deterministic path used to give the zero-padding gradient
    torch.manual_seed(0)
    loc = torchstn.fc_localisation(2 * 6 * 7, (8,))
    st = torchstn.SpatialTransformer(
        loc, "affine", padding_mode=padding_mode, align_corners=align_corners, deterministic=True
    ).double()
    U = torch.rand(3, 2, 6, 7, dtype=torch.float64)
    grads = {}
    for det in (True, False):
        st.deterministic = det
        out = st(U)
        (grads[det],) = torch.autograd.grad((out * out.detach().flip(-1)).sum(), st.head.linear.bias)
    torch.testing.assert_close(grads[True], grads[False], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    "rank,padding_mode,align_corners",
    [(2, p, a) for p in (*PADDINGS, "fill") for a in (False, True)]
    + [(3, "zeros", False), (3, "border", True), (3, "reflection", False)],
)
def test_gradcheck_float64(rank, padding_mode, align_corners):
    torch.manual_seed(0)
    in_shape = (1, 2, 4, 5) if rank == 2 else (1, 1, 3, 4, 3)
    out = (3, 3) if rank == 2 else (2, 2, 2)
    U = torch.rand(in_shape, dtype=torch.float64, requires_grad=True)
    grid = ((torch.rand(1, *out, rank, dtype=torch.float64) * 2 - 1) * 1.3).requires_grad_()

    def fn(U, grid):
        return torchstn.sample(
            U, grid, padding_mode=padding_mode, fill_value=0.3, align_corners=align_corners, deterministic=True
        )

    assert torch.autograd.gradcheck(fn, (U, grid), eps=1e-6, atol=1e-5)


def test_double_backward():
    torch.manual_seed(0)
    U = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    grid = ((torch.rand(1, 3, 3, 2, dtype=torch.float64) * 2 - 1) * 1.2).requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda U, g: torchstn.sample(U, g, deterministic=True), (U, grid), eps=1e-6, atol=1e-5
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rank", [2, 3])
def test_input_gradient_is_bitwise_identical_across_runs(device, rank):
    # a zoom-in grid so that many output points add into the same input pixels (where atomics would race)
    gen = torch.Generator().manual_seed(0)
    B, C = 4, 3
    in_size = (16, 16) if rank == 2 else (6, 6, 6)
    out_size = (64, 64) if rank == 2 else (16, 16, 16)
    U = torch.rand(B, C, *in_size, generator=gen).to(device).requires_grad_()
    grid = (identity_grid(out_size) * 0.3 + 0.05 * torch.randn(B, *out_size, rank, generator=gen)).to(device)
    grad_out = torch.randn(B, C, *out_size, generator=gen).to(device)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # CPU: more than one thread, where index_add_ / index_put_ would be atomic
    try:
        grads = [torch.autograd.grad(torchstn.sample(U, grid, deterministic=True), U, grad_out)[0] for _ in range(3)]
    finally:
        torch.set_num_threads(before)
    for g in grads[1:]:
        assert torch.equal(g, grads[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("state", [(False, False), (False, True), (True, False), (True, True)])
def test_restores_the_global_deterministic_setting(device, state):
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])
    U, grid, grad_out = _case(2, device, torch.float32)
    U.requires_grad_()
    torchstn.sample(U, grid, deterministic=True).backward(grad_out)
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    ) == state


@CUDA
def test_chosen_automatically_under_torch_deterministic_mode_on_cuda():
    U, grid, grad_out = _case(2, "cuda", torch.float32)
    U.requires_grad_()
    ref = torch.autograd.grad(torchstn.sample(U, grid, deterministic=True), U, grad_out)[0]
    torch.use_deterministic_algorithms(True)
    with pytest.raises(RuntimeError, match="deterministic"):  # what users hit with F.grid_sample today
        torch.autograd.grad(F.grid_sample(U, grid, align_corners=False), U, grad_out)
    auto = torch.autograd.grad(torchstn.sample(U, grid), U, grad_out)[0]  # deterministic=None: picks our path
    assert torch.equal(auto, ref)


def test_not_chosen_automatically_on_cpu(monkeypatch):
    sample_module = importlib.import_module("torchstn.functional.sample")  # the attribute is the function

    def fail(*args, **kwargs):
        raise AssertionError("the gather path was used")

    monkeypatch.setattr(sample_module, "_gather_sample", fail)
    torch.use_deterministic_algorithms(True)
    U, grid, grad_out = _case(2, dtype=torch.float32)
    U.requires_grad_()
    torchstn.sample(U, grid).backward(grad_out)  # CPU grid_sample backward is deterministic: kept
    with pytest.raises(AssertionError, match="gather path"):
        torchstn.sample(U, grid, deterministic=True)


def test_batch_one_grid_half_precision_and_non_finite_points():
    U, grid, _ = _case(2, dtype=torch.float32)
    shared = grid[:1]  # (1, H', W', 2): broadcast over the batch
    torch.testing.assert_close(torchstn.sample(U, shared, deterministic=True), torchstn.sample(U, shared))
    out16 = torchstn.sample(U.bfloat16(), grid, deterministic=True)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), torchstn.sample(U, grid), atol=2e-2, rtol=2e-2)
    bad = grid.clone()
    bad[0, 0, 0] = float("nan")
    bad[0, 0, 1] = float("inf")
    out = torchstn.sample(U, bad, deterministic=True, check_finite=False)  # no crash; such points read zero
    assert torch.isfinite(out).all() and (out[0, :, 0, :2] == 0).all()


def test_option_errors():
    U, grid, _ = _case(2, dtype=torch.float32)
    with pytest.raises(OptionError, match="bicubic"):
        torchstn.sample(U, grid, mode="bicubic", deterministic=True)
    with pytest.raises(OptionError, match="antialias"):
        torchstn.sample(U, grid, antialias=True, deterministic=True)
    with pytest.raises(OptionError, match="True, False or None"):
        torchstn.sample(U, grid, deterministic="yes")
    loc = torch.nn.Flatten()
    with pytest.raises(OptionError, match="deterministic=True"):
        torchstn.SpatialTransformer(loc, "affine", in_features=3 * 6 * 7, mode="bicubic", deterministic=True)


def test_spatial_transformer_passes_it_through():
    torch.manual_seed(0)
    st = torchstn.SpatialTransformer(torchstn.fc_localisation(2 * 10 * 10, (8,)), "affine", deterministic=True)
    with torch.no_grad():
        st.head.linear.weight.normal_(0, 0.1)
    assert "deterministic=True" in repr(st)
    U = torch.rand(3, 2, 10, 10, requires_grad=True)
    out = st(U)
    grads = torch.autograd.grad(out.square().sum(), [U, st.head.linear.weight])
    st.deterministic = False
    ref = st(U)
    ref_grads = torch.autograd.grad(ref.square().sum(), [U, st.head.linear.weight])
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compiles_without_graph_breaks():
    U, grid, grad_out = _case(2, dtype=torch.float32)
    U, grid = U.requires_grad_(), grid.requires_grad_()

    def fn(u, g):
        return torchstn.sample(u, g, padding_mode="border", deterministic=True)

    eager = _forward_backward(fn, U, grid, grad_out)
    compiled = _forward_backward(torch.compile(fn, backend="eager", fullgraph=True), U, grid, grad_out)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)
