"""Part 2b: backward passes under ``torch.use_deterministic_algorithms(True)`` are bitwise equal across two runs.

The sampler alone (``deterministic=None``, which picks the gather path on CUDA in this mode; 2D and 3D, bilinear
and nearest, two padding modes, on a large enough batch that atomic adds would collide) and one whole ST-CNN
training step (every parameter's gradient). Also recorded: whether ``F.grid_sample``'s own backward refuses this
mode on the device (it does on CUDA; that refusal is why the gather path exists).

``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA starts for cuBLAS to be deterministic: ``gpu_check.py`` sets it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import torchstn
from gpu.report import Context
from torchstn.models import build_model


@contextlib.contextmanager
def deterministic_mode():
    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)


def _sampler_grads(U, grid, kw) -> list[torch.Tensor]:
    U, grid = U.detach().clone().requires_grad_(), grid.detach().clone().requires_grad_()
    out = torchstn.sample(U, grid, **kw)
    return [out.detach(), *torch.autograd.grad(out, [U, grid], torch.ones_like(out))]


def _step_grads(device, dtype=torch.float32) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("st_cnn", in_shape=(1, 42, 42), transform="affine", st_pool=True).to(device, dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(64, 1, 42, 42, generator=gen, device=device, dtype=dtype)
    y = torch.randint(0, 10, (64,), generator=gen, device=device)
    F.cross_entropy(model(x), y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def run(ctx: Context) -> dict:
    gen = torch.Generator(device=ctx.device).manual_seed(3)
    B = 16 if ctx.dry else 64
    results = {}
    with deterministic_mode():
        for n, size in ((2, (12, 14) if ctx.dry else (96, 96)), (3, (4, 5, 6) if ctx.dry else (24, 24, 24))):
            U = torch.rand(B, 4, *size, generator=gen, device=ctx.device)
            # many more points than pixels, most of them inside: colliding writes in the backward
            grid = torch.rand(B, *(2 * s for s in size), n, generator=gen, device=ctx.device) * 2.2 - 1.1
            for mode in ("bilinear", "nearest"):
                for padding in ("zeros", "reflection"):
                    kw = dict(mode=mode, padding_mode=padding)
                    first, second = _sampler_grads(U, grid, kw), _sampler_grads(U, grid, kw)
                    same = all(torch.equal(a, b) for a, b in zip(first, second))
                    name = f"sample {n}D {mode} {padding}"
                    results[name] = same
                    ctx.checks.add(f"{name}: forward and gradients bitwise equal", same)
        try:  # an op without a deterministic kernel on the device raises here: a finding, recorded
            first, second = _step_grads(ctx.device), _step_grads(ctx.device)
            same, why = all(torch.equal(a, b) for a, b in zip(first, second)), None
        except RuntimeError as e:
            same, why = False, str(e).splitlines()[0][:300]
        ctx.checks.add("st_cnn step: every parameter gradient bitwise equal", same, error=why)
        results["st_cnn step"] = same
        U = torch.rand(2, 1, 8, 8, device=ctx.device, requires_grad=True)
        try:
            F.grid_sample(U, torch.zeros(2, 4, 4, 2, device=ctx.device), align_corners=False).sum().backward()
            refused = None
        except RuntimeError as e:
            refused = str(e).splitlines()[0][:200]
    return {
        "summary": f"{sum(results.values())}/{len(results)} bitwise equal; F.grid_sample backward in this mode: "
        + ("refused" if refused else "allowed"),
        "bitwise_equal": results,
        "grid_sample_backward_refused": refused,
    }
