"""Part 2a: every transform family's grid and every sampler option on the device, against the CPU and float64.

For each case and dtype (float64, float32, bfloat16, float16) the forward and the gradients of every input are
computed on the device, on the CPU in the same dtype, and on the CPU in float64 from the *same rounded inputs*, so
that only the arithmetic differs. The error is ``||out - ref|| / ||ref||`` over the output and every gradient (NaN
never passes); ``nearest`` compares the fraction of elements that differ instead (a point near a pixel boundary may
round either way). :func:`compare` says what passes. In the dry run the device is the CPU, so the CPU's same-dtype
error is the device's own and half precision passes by that rule: the dry run checks the code, not the CPU.

Sampler cases: mode x padding_mode x align_corners in 2D (bicubic is 2D only) and 3D, on grids that reach 20%
outside the input; ``antialias=True`` on a zooming-out, rotated affine grid; ``deterministic=True`` (the gather path).
"""

from __future__ import annotations

import math

import torch

import torchstn
from gpu.report import Context
from torchstn.functional.reading import MODES, PADDING_MODES

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: largest relative L2 error against float64 (forward / gradients); float32 arithmetic lands far under 1e-4
TOL = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 3e-2, "float16": 1e-2}
#: ``nearest``: largest fraction of elements that may differ (points rounding to the other pixel)
NEAREST_TOL = {"float64": 0.0, "float32": 5e-3, "bfloat16": 0.1, "float16": 0.05}
#: check-name prefix -> dtypes torch's CPU kernels lack, recorded as known gaps instead of failures (none now: the
#: one the dry run found, ``avg_pool3d`` in half precision for the 3D mip-map pyramid, the sampler now upcasts)
CPU_GAPS: dict[str, tuple[str, ...]] = {}


def rel_error(out: torch.Tensor, ref: torch.Tensor, nearest: bool = False) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return math.inf
    if nearest:
        return float(((out - ref).abs() > 1e-3 * (1 + ref.abs())).double().mean()) if out.numel() else 0.0
    norm = float(ref.norm())
    return float((out - ref).norm()) / norm if norm > 0 else float((out - ref).norm())


def _outputs(fn, tensors: list[torch.Tensor], grad_out_seed: int) -> list[torch.Tensor]:
    """``fn(*tensors)`` and the gradient of every tensor for a fixed random output gradient."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    out = fn(*leaves)
    gen = torch.Generator().manual_seed(grad_out_seed)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device, out.dtype)
    grads = torch.autograd.grad(out, [t for t in leaves if t.requires_grad], grad, allow_unused=True)
    return [out, *(torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads))]


def compare(ctx: Context, name: str, fn, tensors64: list[torch.Tensor], *, nearest: bool = False) -> dict[str, float]:
    """Run ``fn`` on the device in every dtype against the CPU and float64; add one check per dtype; return errors.

    float64 and float32 must be within :data:`TOL` of float64. Half precision passes within :data:`TOL`, or when
    the device's error is at most twice the CPU's in the same dtype (torch's CPU kernels compute some half-precision
    ops in that precision, the CUDA ones in float32: the bound is then the CPU's). A dtype the device has no kernel
    for fails, except the CPU gaps of :data:`CPU_GAPS` in the dry run.
    """
    worst = {}
    for dname, dtype in DTYPES.items():
        rounded = [t.to(dtype) for t in tensors64]  # the inputs as the dtype holds them
        check = f"{name} {dname}"
        ref = _outputs(fn, [t.double() for t in rounded], 0)
        try:
            dev = _outputs(fn, [t.to(ctx.device) for t in rounded], 0)
        except Exception as e:  # a finding (no kernel for the dtype, a CUDA error): recorded, the part goes on
            gap = isinstance(e, NotImplementedError) and ctx.device.type == "cpu"
            gap = gap and any(check.startswith(g) and dname in ds for g, ds in CPU_GAPS.items())
            ctx.checks.add(check, gap, error=f"{type(e).__name__}: {e}"[:300], known_cpu_gap=gap)
            continue
        try:
            cpu = _outputs(fn, rounded, 0) if ctx.device.type != "cpu" else dev
            cpu_error = max(rel_error(a, b, nearest) for a, b in zip(cpu, ref))
        except NotImplementedError:  # the CPU has no kernel for this dtype: judge the device by the tolerance alone
            cpu_error = None
        tol = (NEAREST_TOL if nearest else TOL)[dname]
        err = max(rel_error(a, b, nearest) for a, b in zip(dev, ref))
        half = dtype in (torch.bfloat16, torch.float16)
        ok = err <= tol or (half and cpu_error is not None and err <= 2 * cpu_error)
        worst[dname] = err
        ctx.checks.add(check, ok, error=err, cpu_error=cpu_error, tol=tol)
    return worst


def _theta(family, batch: int, gen: torch.Generator) -> torch.Tensor:
    ident = family.identity(dtype=torch.float64)  # (P,)
    return ident + 0.05 * torch.randn(batch, ident.numel(), generator=gen, dtype=torch.float64)  # (B, P)


def families(ctx: Context) -> dict[str, dict[str, float]]:
    gen = torch.Generator().manual_seed(1)
    errors = {}
    for name in torchstn.list_transforms():
        family = torchstn.get_transform(name)
        n = family.spatial_rank
        out_size = tuple(s - 1 for s in (ctx.sizes.image if n == 2 else ctx.sizes.volume))
        for align in (False, True):

            def grid(theta, family=family, out_size=out_size, align=align):
                return family.grid(theta, out_size, align_corners=align)

            key = f"grid {name} align_corners={align}"
            errors[key] = compare(ctx, key, grid, [_theta(family, ctx.sizes.batch, gen)])
    return errors


def _sampler_cases(ctx: Context, gen: torch.Generator):
    """``(name, kwargs, input64, grid64)`` for every sampler option."""
    B, C = ctx.sizes.batch, 3
    for n, size in ((2, ctx.sizes.image), (3, ctx.sizes.volume)):
        out = tuple(s - 1 for s in size)
        U = torch.rand(B, C, *size, generator=gen, dtype=torch.float64)
        grid = torch.rand(B, *out, n, generator=gen, dtype=torch.float64) * 2.4 - 1.2  # (B, *out, n), 20% outside
        for mode in MODES:
            if mode == "bicubic" and n == 3:
                continue
            for padding in PADDING_MODES:
                for align in (False, True):
                    kw = dict(mode=mode, padding_mode=padding, align_corners=align, fill_value=0.25)
                    yield f"sample {n}D {mode} {padding} align_corners={align}", kw, U, grid
                    if mode != "bicubic" and not align:
                        yield f"sample {n}D {mode} {padding} deterministic=True", {**kw, "deterministic": True}, U, grid
        zoom = torchstn.get_transform("affine" if n == 2 else "affine3d")
        theta = 2.5 * zoom.identity(dtype=torch.float64).expand(B, -1).clone()  # x2.5 zoom-out: footprint > 1
        theta += 0.1 * torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        small = zoom.grid(theta, tuple(max(2, s // 2) for s in size))  # (B, *out/2, n)
        for padding in PADDING_MODES:
            yield (
                f"sample {n}D antialias {padding}",
                dict(antialias=True, padding_mode=padding, fill_value=0.25),
                U,
                small,
            )


def sampler(ctx: Context) -> dict[str, dict[str, float]]:
    gen = torch.Generator().manual_seed(2)
    errors = {}
    for name, kw, U, grid in _sampler_cases(ctx, gen):

        def fn(u, g, kw=kw):
            return torchstn.sample(u, g, **kw)

        errors[name] = compare(ctx, name, fn, [U, grid], nearest=kw.get("mode") == "nearest")
    return errors


def run(ctx: Context) -> dict:
    errors = {**families(ctx), **sampler(ctx)}

    def worst(d: str, nearest: bool) -> float:
        return max((e[d] for k, e in errors.items() if d in e and (" nearest " in k) == nearest), default=math.nan)

    rows = [
        [d, f"{worst(d, False):.2e}", f"{TOL[d]:g}", f"{worst(d, True):.2%}", f"{NEAREST_TOL[d]:.1%}"] for d in DTYPES
    ]
    return {
        "summary": f"{len(errors)} cases x {len(DTYPES)} dtypes; worst relative error "
        + ", ".join(f"{d} {worst(d, False):.1e}" for d in DTYPES),
        "errors": errors,
        "table": {
            "headers": ["dtype", "worst relative error", "tolerance", "nearest: worst elements off", "tolerance"],
            "rows": rows,
        },
    }
