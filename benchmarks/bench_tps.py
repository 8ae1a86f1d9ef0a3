"""TPS grid generation (K=16 control points, B=64, 224x224 output): torchstn against kornia's TPS.

Question: how much faster is our precomputed TPS grid (one matrix product with a cached ``(H*W, K)`` matrix) than
solving and evaluating the spline per sample as kornia does?

Implementations, timed interleaved in the same process (see ``benchmarks/README.md``):

* ``ours``: ``get_transform("tps").grid(theta, (224, 224))`` (precomputed matrix, cached after the first call);
* ``ours_direct``: the same family with ``precompute=False`` (solves the TPS system per sample: our reference path);
* ``kornia``: ``get_tps_transform(lattice, source_points)`` + ``warp_points_tps(identity_grid_points, ...)``,
  composed output->input as kornia's ``warp_image_tps`` documents.

Parts: ``grid`` (grid generation only), ``warp`` (ours grid + ``sample`` against ``kornia.warp_image_tps``, input
``B x 3 x 224 x 224``), ``precompute`` (our first call, which builds the cached matrix, against a cached call),
``layout`` (our grid against the same product written as one ``(2B, K) @ (K, H*W)`` matrix product plus a contiguous
copy: it found the batched ``(H*W, K) @ (B, K, 2)`` layout 4-5x slower, and now guards the folded layout that
``tps_grid`` uses since).
Modes: ``fwd`` (``torch.no_grad``) and ``fwdbwd`` (backward w.r.t. the control points). kornia is optional: without it
the script times ours only and says so. Cases with kornia run at most ``TORCHSTN_BENCH_KORNIA_REPEATS`` (default 30)
samples and 2 warm-ups (a kornia call takes 0.3-0.8 s here, seconds on a busy machine).

Run: ``python benchmarks/bench_tps.py`` with kornia installed (``--help`` for options).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, fmt_ratio, paired_ratio, table, time_interleaved  # noqa: E402

import torchstn  # noqa: E402
from torchstn.coords import identity_grid  # noqa: E402
from torchstn.functional import tps as _tps  # noqa: E402

try:
    from kornia.geometry.transform import get_tps_transform, warp_image_tps, warp_points_tps
except ImportError:  # the script still times ours
    get_tps_transform = warp_image_tps = warp_points_tps = None

B, GRID_SIZE, OUT, CHANNELS = 64, 4, (224, 224), 3
K = GRID_SIZE**2
GOAL = 10.0  # minimum speed-up of ours over kornia for grid generation
KORNIA_REPEATS = int(os.environ.get("TORCHSTN_BENCH_KORNIA_REPEATS", "30"))
CASES = [{"part": p, "mode": m} for p in ("grid", "warp") for m in ("fwd", "fwdbwd")]
CASES += [{"part": "precompute", "mode": "fwd"}, *({"part": "layout", "mode": m} for m in ("fwd", "fwdbwd"))]


def _points():
    """Lattice ``(B, K, 2)`` (output side) and perturbed source points ``(B, K, 2)`` (what theta holds)."""
    ctrl = _tps.lattice(GRID_SIZE, dtype=torch.float32).expand(B, K, 2).contiguous()
    gen = torch.Generator().manual_seed(0)
    return ctrl, ctrl + 0.05 * torch.randn(B, K, 2, generator=gen)


def kornia_grid(ctrl: torch.Tensor, src: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """kornia's TPS grid mapping output points ``pts (B, N, 2)`` to input points, with ``f(ctrl) = src``."""
    kernel_weights, affine_weights = get_tps_transform(ctrl, src)  # fit dst (lattice) -> src, centres at src
    return warp_points_tps(pts, src, kernel_weights, affine_weights)  # (B, N, 2)


def checks() -> dict:
    """Both paths give the identity for unmoved control points and warps of the same magnitude otherwise."""
    ctrl, src = _points()
    ident = identity_grid(OUT)  # (1, H, W, 2)
    fam, direct = torchstn.get_transform("tps"), torchstn.get_transform("tps", precompute=False)
    with torch.no_grad():
        ours = fam.grid(src.reshape(B, -1), OUT)
        out = {
            "ours_identity_max_err": float((fam.grid(ctrl.reshape(B, -1), OUT) - ident).abs().max()),
            "ours_vs_direct_max_diff": float((direct.grid(src.reshape(B, -1), OUT) - ours).abs().max()),
            "ours_mean_displacement": float((ours - ident).abs().mean()),
            "ours_interpolation_max_err": float((fam.transform_points(src.reshape(B, -1), ctrl) - src).abs().max()),
        }
        if get_tps_transform is None:
            return out
        pts = ident.reshape(1, -1, 2).expand(B, -1, -1)
        theirs = kornia_grid(ctrl, src, pts).view(B, *OUT, 2)
        out.update(
            {
                "kornia_identity_max_err": float(
                    (kornia_grid(ctrl, ctrl.clone(), pts).view(B, *OUT, 2) - ident).abs().max()
                ),
                "kornia_mean_displacement": float((theirs - ident).abs().mean()),
                "kornia_interpolation_max_err": float((kornia_grid(ctrl, src, ctrl) - src).abs().max()),
                "ours_vs_kornia_mean_abs_diff": float((ours - theirs).abs().mean()),
                "ours_vs_kornia_max_abs_diff": float((ours - theirs).abs().max()),
            }
        )
    return out


def _fns(part: str, mode: str) -> dict:
    ctrl, src0 = _points()
    backward = mode == "fwdbwd"
    src = src0.clone().requires_grad_(backward)  # (B, K, 2) for kornia
    theta = src0.reshape(B, 2 * K).clone().requires_grad_(backward)  # (B, 2K) for ours
    fam, direct = torchstn.get_transform("tps"), torchstn.get_transform("tps", precompute=False)
    pts = identity_grid(OUT).reshape(1, -1, 2).expand(B, -1, -1)  # (B, H*W, 2)
    x = torch.rand(B, CHANNELS, *OUT, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    grad = torch.randn(B, CHANNELS if part == "warp" else 2, *OUT, generator=gen)
    grad = grad if part == "warp" else grad.permute(0, 2, 3, 1).contiguous()  # grid grads are (B, H, W, 2)

    def call(fn, leaf):
        def run():
            with torch.set_grad_enabled(backward):
                out = fn(leaf)
                return torch.autograd.grad(out, leaf, grad) if backward else out

        return run

    if part == "precompute":

        def first_call(t):
            _tps._grid_matrix_cpu64.cache_clear()
            _tps._DEVICE_CACHE.clear()
            return fam.grid(t, OUT)

        return {"ours_first_call": call(first_call, theta), "ours": call(lambda t: fam.grid(t, OUT), theta)}
    if part == "layout":
        M = _tps.tps_grid_matrix(GRID_SIZE, OUT)  # (H*W, K), the matrix ours uses

        def folded(t):  # (B, 2K) -> (B, 2, K) -> (2B, K) @ (K, H*W) -> (B, 2, H, W) -> (B, H, W, 2)
            return (t.view(B, K, 2).transpose(1, 2).reshape(2 * B, K) @ M.t()).view(B, 2, *OUT).permute(0, 2, 3, 1)

        return {
            "ours": call(lambda t: fam.grid(t, OUT), theta),
            "folded_mm": call(lambda t: folded(t).contiguous(), theta),
        }
    if part == "grid":
        fns = {
            "ours": call(lambda t: fam.grid(t, OUT), theta),
            "ours_direct": call(lambda t: direct.grid(t, OUT), theta),
        }
        if get_tps_transform is not None:
            fns["kornia"] = call(lambda s: kornia_grid(ctrl, s, pts).view(B, *OUT, 2), src)
        return fns
    fns = {"ours": call(lambda t: torchstn.sample(x, fam.grid(t, OUT), check_finite=False), theta)}
    if get_tps_transform is not None:
        fns["kornia"] = call(lambda s: warp_image_tps(x, s, *get_tps_transform(ctrl, s)), src)
    return fns


def run_case(case: dict, method: Method) -> dict:
    fns = _fns(case["part"], case["mode"])
    if "kornia" in fns:
        method = dataclasses.replace(method, repeats=min(method.repeats, KORNIA_REPEATS), warmup=min(method.warmup, 2))
    stats = time_interleaved(fns, method)
    res = {"stats": stats, "method": dataclasses.asdict(method), "kornia_available": get_tps_transform is not None}
    slow = {
        "grid": ["ours_direct", "kornia"],
        "warp": ["kornia"],
        "precompute": ["ours_first_call"],
        "layout": ["folded_mm"],
    }
    res["speedup_of_ours"] = {k: paired_ratio(stats, k, "ours") for k in slow[case["part"]] if k in stats}
    if case["part"] == "layout":
        with torch.no_grad():
            ours, alt = fns["ours"](), fns["folded_mm"]()
            res["checks"] = {"folded_vs_ours_max_diff": max(float((a - b).abs().max()) for a, b in zip(ours, alt))}
    if case == CASES[0]:
        res["checks"] = checks()
    return res


def render(doc: dict) -> str:
    out = [f"Command: `{doc['command']}`  ", _common.env_line(doc), ""]
    if not doc["environment"]["kornia"]:
        out += ["**kornia is not installed in this environment: only ours was timed** (see benchmarks/README.md).", ""]
    out.append(
        "Time in ms, median [IQR] (n = samples); speed-up = other / ours per interleaved repeat, median "
        "[quartiles]. Goal: ours >= 10x faster than kornia for grid generation (met: the lower quartile also "
        "clears it). quiet: repeats that started with the other core idle."
    )
    out.append("")
    rows = []
    for res in doc["cases"]:
        part, mode, s = res["case"]["part"], res["case"]["mode"], res["stats"]
        g = res.get("gate")
        quiet = f"{g['quiet_repeats']}/{g['repeats']}" if g else "?"
        for other, r in res["speedup_of_ours"].items():
            goal = ""
            if other == "kornia" and part == "grid":
                ok, sure = r["paired_median"] >= GOAL, r["paired_q1"] >= GOAL
                goal = f">= {GOAL:g}x: " + ("met" if ok and sure else "met (median only)" if ok else "**not met**")
            rows.append(
                [
                    part,
                    mode,
                    f"{fmt_ms(s['ours'])} (n={s['ours']['n']})",
                    other,
                    f"{fmt_ms(s[other])} (n={s[other]['n']})",
                    fmt_ratio(r),
                    goal,
                    quiet,
                ]
            )
        if not res["speedup_of_ours"]:
            rows.append([part, mode, f"{fmt_ms(s['ours'])} (n={s['ours']['n']})", "-", "-", "-", "", quiet])
    out.append(table(["part", "mode", "ours", "vs", "other", "speed-up of ours", "goal", "quiet"], rows))
    chk = next((r["checks"] for r in doc["cases"] if r["case"]["part"] == "grid" and "checks" in r), None)
    if chk:
        out += ["", "Sanity checks (normalised units, source points = lattice + N(0, 0.05^2)):", ""]
        out.append(table(["check", "value"], [[k, f"{v:.3g}"] for k, v in chk.items()]))
    return "\n".join(out)


if __name__ == "__main__":
    _common.main("tps", __doc__.splitlines()[0], CASES, run_case, render)
