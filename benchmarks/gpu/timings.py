"""Part 3: timings on the device, the house method (``benchmarks/README.md``) with the device's own clock.

The implementations of a case are warmed up, then timed interleaved (repeat ``r`` rotates their order), each
sample ``number`` back-to-back calls between two CUDA events (``perf_counter`` around a synchronize on the CPU);
medians, quartiles and the median of the per-repeat ratios (:mod:`_common`). Cases:

* ``affine``: one affine ST step, ``F.affine_grid`` + ``F.grid_sample`` against ``torchstn.affine_grid`` +
  ``torchstn.sample`` (forward; forward + backward to theta);
* ``bandwidth``: the bilinear sampler's effective bandwidth (input, grid and output each moved once) against a
  device-to-device copy of :attr:`Sizes.copy_bytes` in this process (bytes read + written): the physical limit;
* ``tps``: the TPS grid (K=16) forward and forward + backward;
* ``train_step``: Table 1's RTS ST-CNN (affine, batch 256, SGD) step in images/s: fp32, bf16 autocast, compiled,
  and compiled with CUDA graphs (``mode="reduce-overhead"``, CUDA only), on batches generated on the device.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from _common import fmt_ms, fmt_ratio, paired_ratio, summarise

import torchstn
from gpu.report import Context
from torchstn.models import build_model


def _sample_once(fn, n: int, ctx: Context) -> float:
    """Seconds per call of ``n`` back-to-back calls."""
    if ctx.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def time_interleaved(fns: dict, ctx: Context, min_time: float | None = None) -> dict[str, dict]:
    """``{name: summarise(...)}`` of every callable; ``warmup_s`` is the warm-up's mean call (compiling included)."""
    s = ctx.sizes
    min_time = min_time if min_time is not None else (0.001 if ctx.dry else 0.02)
    warm, number = {}, {}
    for k, fn in fns.items():
        t0 = time.perf_counter()
        for _ in range(max(1, s.warmup)):
            fn()
        ctx.sync()
        warm[k] = (time.perf_counter() - t0) / max(1, s.warmup)
        number[k] = max(1, math.ceil(min_time / max(_sample_once(fn, 3, ctx), 1e-7)))  # calls per sample, warm
    names, times = list(fns), {k: [] for k in fns}
    for r in range(s.repeats):
        shift = r % len(names)
        for k in names[shift:] + names[:shift]:
            ctx.sync()
            times[k].append(_sample_once(fns[k], number[k], ctx))
    return {k: {**summarise(times[k], number[k]), "warmup_s": round(warm[k], 4)} for k in names}


def _affine_steps(x: torch.Tensor, theta: torch.Tensor, out_size: tuple[int, int]) -> dict:
    """torch's and our affine ST step on ``x (B, C, H, W)``; with a backward to ``theta`` if it requires one."""
    B, C = x.shape[:2]
    backward = theta.requires_grad

    def step(grid_fn, sample_fn):
        def call():
            with torch.set_grad_enabled(backward):
                v = sample_fn(x, grid_fn(theta))
                if backward:
                    torch.autograd.grad(v.sum(), theta)

        return call

    return {
        "torch": step(
            lambda t: F.affine_grid(t, [B, C, *out_size], align_corners=False),
            lambda u, g: F.grid_sample(u, g, align_corners=False),
        ),
        "ours": step(
            lambda t: torchstn.affine_grid(t, out_size),
            lambda u, g: torchstn.sample(u, g, check_finite=False),
        ),
    }


def affine(ctx: Context) -> tuple[dict, list]:
    configs = {"tiny": (4, 1, 8, 8, 8, 8)}
    if not ctx.dry:
        configs = {"mnist42": (256, 1, 42, 42, 42, 42), "cub224": (64, 3, 224, 224, 112, 112)}
    out, rows = {}, []
    for name, (B, C, H, W, Ho, Wo) in configs.items():
        x = torch.rand(B, C, H, W, device=ctx.device)
        theta0 = torch.eye(2, 3, device=ctx.device) + 0.1 * torch.randn(B, 2, 3, device=ctx.device)  # (B, 2, 3)
        for mode in ("fwd", "fwdbwd"):
            theta = theta0.clone().requires_grad_(mode == "fwdbwd")
            stats = time_interleaved(_affine_steps(x, theta, (Ho, Wo)), ctx)
            ratio = paired_ratio(stats, "torch", "ours")
            out[f"{name}/{mode}"] = {"stats": stats, "speedup": ratio}
            rows.append(
                [
                    f"affine {name} {mode}: torch / ours (B={B})",
                    f"{fmt_ms(stats['torch'])} / {fmt_ms(stats['ours'])}",
                    f"speed-up {fmt_ratio(ratio)}",
                    "",
                ]
            )
    return out, rows


def bandwidth(ctx: Context) -> tuple[dict, list]:
    B, C, H, W = ctx.sizes.bandwidth
    n_copy = ctx.sizes.copy_bytes // 4
    src, dst = torch.rand(n_copy, device=ctx.device), torch.empty(n_copy, device=ctx.device)
    theta = torch.eye(2, 3, device=ctx.device).expand(B, 2, 3) + 0.02 * torch.randn(B, 2, 3, device=ctx.device)
    grid = torchstn.affine_grid(theta, (H, W))  # (B, H, W, 2): local reads, as an ST near the identity makes
    fns, moved = {"copy": lambda: dst.copy_(src)}, {"copy": 2 * src.numel() * 4}
    for dtype in (torch.float32, torch.bfloat16):
        x, g = torch.rand(B, C, H, W, device=ctx.device, dtype=dtype), grid.to(dtype)
        tag = str(dtype).removeprefix("torch.")
        fns[f"ours {tag}"] = lambda x=x, g=g: torchstn.sample(x, g, check_finite=False)
        fns[f"torch {tag}"] = lambda x=x, g=g: F.grid_sample(x, g, align_corners=False)
        bytes_ = 2 * x.numel() * x.element_size() + g.numel() * g.element_size()  # input + output + grid, once each
        moved[f"ours {tag}"] = moved[f"torch {tag}"] = bytes_
    with torch.no_grad():
        stats = time_interleaved(fns, ctx)
    gbs = {k: moved[k] / (stats[k]["median_ms"] / 1e3) / 1e9 for k in fns}
    rows = [
        [f"bandwidth {k}", fmt_ms(stats[k]), f"{gbs[k]:.0f} GB/s", f"{gbs[k] / gbs['copy']:.0%} of the copy"]
        for k in fns
    ]
    return {
        "stats": stats,
        "bytes": moved,
        "gb_per_s": gbs,
        "fraction_of_copy": {k: gbs[k] / gbs["copy"] for k in fns},
    }, rows


def tps(ctx: Context) -> tuple[dict, list]:
    B, size = ctx.sizes.tps_batch, ctx.sizes.tps_size
    family = torchstn.get_transform("tps")
    theta0 = family.identity(device=ctx.device) + 0.05 * torch.randn(B, family.num_params, device=ctx.device)
    theta = theta0.clone().requires_grad_()
    fns = {
        "fwd": lambda: family.grid(theta0, size),
        "fwdbwd": lambda: torch.autograd.grad(family.grid(theta, size).sum(), theta),
    }
    stats = time_interleaved(fns, ctx)
    points = B * math.prod(size)
    rows = [
        [
            f"tps K=16 B={B} {size[0]}x{size[1]} {k}",
            fmt_ms(stats[k]),
            f"{points / stats[k]['median_ms'] / 1e6:.0f} Mpoints/s",
            "",
        ]
        for k in fns
    ]
    return {"stats": stats, "points": points}, rows


def _train_step(model, batches, dtype=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    i = [0]

    def step():
        x, y = batches[i[0] % len(batches)]
        i[0] += 1
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def train_step(ctx: Context) -> tuple[dict, list]:
    dev, B = ctx.device, ctx.sizes.affine_batch if ctx.dry else 256
    batches = [(torch.rand(B, 1, 42, 42, device=dev), torch.randint(0, 10, (B,), device=dev)) for _ in range(4)]

    def model():
        torch.manual_seed(0)
        return build_model("st_cnn", in_shape=(1, 42, 42), transform="affine", st_pool=True).to(dev)

    backend = ctx.sizes.compile_backend
    fns = {"fp32": _train_step(model(), batches), "bf16": _train_step(model(), batches, torch.bfloat16)}
    compiled = {"compiled": lambda: torch.compile(model(), backend=backend)}
    if dev.type == "cuda":  # CUDA graphs: inductor's cudagraph trees replay the whole forward and backward
        compiled["compiled_cudagraphs"] = lambda: torch.compile(model(), mode="reduce-overhead")
    failed, compile_s = {}, {}
    for k, make in compiled.items():  # one that fails to compile or run is recorded; the others are timed
        try:
            step, t0 = _train_step(make(), batches), time.perf_counter()
            step()  # compiles (and, with CUDA graphs, records on later calls: the warm-up's job)
            ctx.sync()
            compile_s[k], fns[k] = round(time.perf_counter() - t0, 2), step
        except Exception as e:
            failed[k] = f"{type(e).__name__}: {e}"[:500]
        ctx.checks.add(f"train step {k} compiles and runs", k not in failed, error=failed.get(k))
    stats = time_interleaved(fns, ctx)
    ips = {k: B / (s["median_ms"] / 1e3) for k, s in stats.items()}
    ctx.options["step_s"] = (
        stats["fp32"]["median_ms"] / 1e3
    )  # the engine trains eager fp32: part 4 reports it beside its own
    rows = [
        [
            f"train step {k} (batch {B})",
            fmt_ms(stats[k]),
            f"{ips[k]:,.0f} images/s",
            f"first call (compiling) {compile_s[k]:.1f} s" if k in compile_s else "",
        ]
        for k in fns
    ]
    data = {"stats": stats, "images_per_s": ips, "batch": B, "compile_backend": backend, "compile_s": compile_s}
    return {**data, "failed": failed}, rows


def run(ctx: Context) -> dict:
    data, rows = {}, []
    for name, case in (("affine", affine), ("bandwidth", bandwidth), ("tps", tps), ("train_step", train_step)):
        t0 = time.monotonic()
        data[name], case_rows = case(ctx)
        data[name]["wall_s"] = round(time.monotonic() - t0, 2)
        rows += case_rows
        ctx.checks.add(f"{name} timed", all(math.isfinite(v["median_ms"]) for v in _stats(data[name])))
    bw = data["bandwidth"]["fraction_of_copy"]["ours float32"]
    ips = data["train_step"]["images_per_s"]
    return {
        "summary": f"sampler {bw:.0%} of the copy's bandwidth; train step "
        + ", ".join(f"{k} {v:,.0f}" for k, v in ips.items())
        + " images/s; affine fwd+bwd speed-up "
        + ", ".join(
            f"{k.split('/')[0]} {v['speedup']['paired_median']:.2f}x"
            for k, v in data["affine"].items()
            if k.endswith("fwdbwd")
        ),
        "cases": data,
        "table": {"headers": ["case", "median ms [IQR]", "rate", "note"], "rows": rows},
    }


def _stats(case: dict) -> list[dict]:
    if "stats" in case:
        return list(case["stats"].values())
    return [s for v in case.values() if isinstance(v, dict) and "stats" in v for s in v["stats"].values()]
