"""Part 2c: ``torch.compile(fullgraph=True)`` on the device against eager: forward and every parameter gradient.

Table 1's ST-CNN (affine) whole, and a :class:`~torchstn.nn.SpatialTransformer` of the projective and TPS families
on a feature map (input gradient too). The real run compiles with inductor; the dry run with ``aot_eager`` (the same
dynamo trace and autograd split, without inductor's C++ build). cuDNN's TF32 is off for the part, so both sides
compute in float32.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from gpu.parity import rel_error
from gpu.report import Context
from torchstn.models import build_model
from torchstn.nn import SpatialTransformer, fc_localisation

#: float32 on both sides; inductor fuses and reorders sums, so a few ulps accumulate
TOL = 1e-4


def _grads(model, x, y=None):
    x = x.detach().clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    out = model(x)
    loss = F.cross_entropy(out, y) if y is not None else out.square().mean()
    loss.backward()
    return [out.detach(), x.grad, *(p.grad for p in model.parameters())]


def _check(ctx: Context, name: str, eager, x, y=None) -> dict:
    compiled = torch.compile(eager, fullgraph=True, backend=ctx.sizes.compile_backend)
    t0 = time.monotonic()
    got = _grads(compiled, x, y)
    ctx.sync()
    first_s = time.monotonic() - t0
    want = _grads(eager, x, y)
    err = max(rel_error(a, b) for a, b in zip(got, want))
    ctx.checks.add(f"compile {name}", err <= TOL, error=err, tol=TOL, compile_s=first_s)
    return {"error": err, "first_call_s": round(first_s, 1)}


def run(ctx: Context) -> dict:
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN's default TF32 convolutions would hide a float32 difference
    try:
        return _run(ctx)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _run(ctx: Context) -> dict:
    torch.manual_seed(0)
    dev, B = ctx.device, 4 if ctx.dry else 128
    torch._dynamo.reset()
    results = {}
    model = build_model("st_cnn", in_shape=(1, 42, 42), transform="affine", st_pool=True).to(dev)
    x, y = torch.rand(B, 1, 42, 42, device=dev), torch.randint(0, 10, (B,), device=dev)
    results["st_cnn affine"] = _check(ctx, "st_cnn affine (fwd + bwd)", model, x, y)
    fmap = torch.rand(B, 8, 16, 16, device=dev)
    for family in ("projective", "tps"):
        st = SpatialTransformer(fc_localisation(8 * 16 * 16, [32]), family, in_features=32).to(dev)
        with torch.no_grad():  # off the identity, so the grids are not trivial
            st.head.linear.bias.add_(0.05 * torch.randn_like(st.head.linear.bias))
        results[f"ST {family}"] = _check(ctx, f"SpatialTransformer {family} (fwd + bwd)", st, fmap)
    return {
        "summary": f"backend {ctx.sizes.compile_backend}; worst error "
        + f"{max(r['error'] for r in results.values()):.1e}; first calls "
        + ", ".join(f"{k} {r['first_call_s']} s" for k, r in results.items()),
        "backend": ctx.sizes.compile_backend,
        "results": results,
    }
