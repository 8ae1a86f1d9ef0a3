"""Distorted-MNIST generation speed: ``sample_params`` + ``apply`` per paper variant, batch 256, 2 threads.

Question: can the data pipeline re-distort every training batch on the fly? Goals (CPU, 2 threads): RTS >= 20,000
and E >= 5,000 samples/s.

Per case, timed interleaved in the same process (see ``benchmarks/README.md``):

* ``total``: ``d.apply(x, d.sample_params(g, 256))``, what a re-distorting training set does per batch;
* ``params``: ``d.sample_params(g, 256)`` alone; ``apply``: ``d.apply(x, params)`` with fixed params.

Paths: ``float32`` (training: grid and sampling in float32), ``float64`` (how fixed sets are rendered: float64 grid
and sampling, one rounding to float32), ``dataset`` (``DistortedMNIST.batch`` on random indices: adds the uint8 ->
float conversion and indexing; ``addition`` is ``MNISTAddition.batch``). Inputs are synthetic digits (the timing does
not depend on the pixel values).

3D also times ``apply_old``: :func:`extrude3d_before`, ``Extrude3D.apply`` as it was before the slab sampler (the
full ``(chunk, 60, 60, 60, 3)`` grid, 8-tap trilinear ``grid_sample`` of the extruded volume), on the same params,
interleaved with ``apply``; the speed-up is the median [quartiles] of the per-repeat ratios ``apply_old / apply``.
The case also records the largest difference between the two results.

Run: ``python benchmarks/bench_data.py`` (``--help`` for options).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, table, time_interleaved  # noqa: E402

from torchstn.data import DistortedMNIST, MNISTAddition, synthetic_digits  # noqa: E402
from torchstn.data.distortions import Extrude3D, TranslateClutter, get_distortion  # noqa: E402
from torchstn.data.distortions.distortion import DIGIT, warp  # noqa: E402
from torchstn.transforms import get_transform  # noqa: E402

BATCH = 256
GOALS = {"RTS": 20_000, "E": 5_000}  # samples/s of the float32 total
SLOW_REPEATS = 8  # cap on samples for the 3D cases (one call takes about half a second)
MIN_QUIET = 5  # samples/s come from the repeats that started on a quiet machine when there are at least this many
CASES = [{"variant": v, "path": "float32"} for v in ("plain", "R", "RTS", "P", "E", "TC", "3D")]
CASES += [{"variant": v, "path": "float64"} for v in ("R", "RTS", "P", "E", "TC")]
CASES += [{"variant": v, "path": "dataset"} for v in ("RTS", "E", "TC", "addition")]


def _distortion(variant: str, pool: torch.Tensor):
    if variant == "TC":
        return TranslateClutter(pool=pool)
    if variant == "3D":
        return Extrude3D()
    return get_distortion(variant)


def extrude3d_before(vol: Extrude3D, images: torch.Tensor, params: dict, compute_dtype=None, chunk=16) -> torch.Tensor:
    """``Extrude3D.apply`` before the slab sampler: the extruded volume read through the full 3D grid, in chunks of
    ``chunk`` images (its default then)."""
    B = images.shape[0]
    theta = vol.matrix(params).reshape(B, 12)  # (B, 12)
    volume = images.unsqueeze(2).expand(B, 1, vol.depth, DIGIT, DIGIT).contiguous()  # (B, 1, depth, 28, 28)
    out = images.new_empty((B, 1, *vol.out_size))
    family = get_transform("affine3d")
    for start in range(0, B, chunk):
        sl = slice(start, start + chunk)
        out[sl] = warp(volume[sl], family, theta[sl], vol.out_size, compute_dtype)
    return out


def _fns(variant: str, path: str) -> dict:
    images, labels = synthetic_digits(2048, seed=0)
    if path == "dataset":
        source = (images, labels)
        ds = MNISTAddition(source=source) if variant == "addition" else DistortedMNIST(variant, source=source)
        g = torch.Generator().manual_seed(0)
        return {"total": lambda: ds.batch(torch.randint(0, len(ds), (BATCH,), generator=g), g)}
    d = _distortion(variant, images)
    x = images[:BATCH].float().div(255.0).unsqueeze(1)  # (B, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    fixed = d.sample_params(torch.Generator().manual_seed(1), BATCH)
    cd = torch.float64 if path == "float64" else None
    fns = {
        "total": lambda: d.apply(x, d.sample_params(g, BATCH), compute_dtype=cd),
        "params": lambda: d.sample_params(g, BATCH),
        "apply": lambda: d.apply(x, fixed, compute_dtype=cd),
    }
    if isinstance(d, Extrude3D):
        fns["apply_old"] = lambda: extrude3d_before(d, x, fixed, compute_dtype=cd)
    return fns


def _max_difference_3d(path: str) -> float:
    d, x = Extrude3D(), synthetic_digits(32, seed=0)[0].float().div(255.0).unsqueeze(1)
    params = d.sample_params(torch.Generator().manual_seed(1), 32)
    cd = torch.float64 if path == "float64" else None
    return float((d.apply(x, params, compute_dtype=cd) - extrude3d_before(d, x, params, cd)).abs().max())


def run_case(case: dict, method: Method) -> dict:
    if case["variant"] == "3D":
        method = dataclasses.replace(method, repeats=min(method.repeats, SLOW_REPEATS), warmup=min(method.warmup, 2))
    stats = time_interleaved(_fns(case["variant"], case["path"]), method)
    # The harness logs, per repeat, whether other processes were quiet when it started (same order as the samples).
    quiet = [i for i, g in enumerate(_common._GATE_LOG) if g["quiet"]]
    samples = stats["total"]["samples_ms"]
    used = [samples[i] for i in quiet] if len(quiet) >= MIN_QUIET else samples
    q1, med, q3 = statistics.quantiles(used, n=4, method="inclusive") if len(used) > 1 else (used[0],) * 3
    res = {
        "stats": stats,
        "method": dataclasses.asdict(method),
        "batch": BATCH,
        "total_from": f"{len(used)} {'quiet' if len(quiet) >= MIN_QUIET else 'all'} repeats",
        "total_quiet_ms": {"median_ms": med, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1, "n": len(used)},
        "samples_per_s": BATCH / (med / 1e3),
        "samples_per_s_q1_q3": [BATCH / (q3 / 1e3), BATCH / (q1 / 1e3)],
    }
    goal = GOALS.get(case["variant"]) if case["path"] == "float32" else None
    if goal:
        res["goal_samples_per_s"] = goal
        res["goal_met"] = res["samples_per_s"] >= goal
    if "apply_old" in stats:
        res["speedup_vs_old"] = _common.paired_ratio(stats, "apply_old", "apply")
        res["max_abs_difference_vs_old"] = _max_difference_3d(case["path"])
    return res


def render(doc: dict) -> str:
    legend = (
        f"Batch {BATCH}. Time per batch in ms, median [IQR]; `total` and samples/s = {BATCH} / median of "
        f"`total` use only the repeats that started on a quiet machine when there are at least {MIN_QUIET} of "
        "them (column `from`), else all; in brackets: samples/s from the upper and lower quartile. On a loaded "
        "machine the fastest sample is the best estimate of the unloaded speed (column `best sample`). "
        "`sample_params` and `apply` are over all repeats."
    )
    out = [
        f"Command: `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296 {doc['command']}`  ",
        _common.env_line(doc),
        "",
        legend,
        "",
    ]
    rows = []
    for res in doc["cases"]:
        c, s = res["case"], res["stats"]
        lo, hi = res["samples_per_s_q1_q3"]
        best = BATCH / (s["total"]["min_ms"] / 1e3)
        goal = ""
        if "goal_samples_per_s" in res:
            target = res["goal_samples_per_s"]
            verdict = (
                "met"
                if res["samples_per_s"] >= target
                else "met by the best sample only"
                if best >= target
                else "**not met**"
            )
            goal = f">= {target:,}: {verdict}"
        rows.append(
            [
                c["variant"],
                c["path"],
                fmt_ms(res["total_quiet_ms"]),
                res["total_from"],
                f"{res['samples_per_s']:,.0f} [{lo:,.0f}-{hi:,.0f}]",
                f"{best:,.0f}",
                fmt_ms(s["params"]) if "params" in s else "-",
                fmt_ms(s["apply"]) if "apply" in s else "-",
                goal,
            ]
        )
    old = [
        [
            res["case"]["variant"],
            res["case"]["path"],
            fmt_ms(res["stats"]["apply_old"]),
            fmt_ms(res["stats"]["apply"]),
            _common.fmt_ratio(res["speedup_vs_old"]),
            f"{res['max_abs_difference_vs_old']:.1e}",
        ]
        for res in doc["cases"]
        if "speedup_vs_old" in res
    ]
    if old:
        heads = ["variant", "path", "apply_old ms", "apply ms", "speed-up (apply_old / apply)", "max abs difference"]
        out += [table(heads, old), ""]
    out.append(
        table(
            [
                "variant",
                "path",
                "total ms",
                "from",
                "samples/s (median)",
                "samples/s (best sample)",
                "sample_params ms",
                "apply ms",
                "goal",
            ],
            rows,
        )
    )
    return "\n".join(out)


if __name__ == "__main__":
    _common.main("data", __doc__.splitlines()[0], CASES, run_case, render)
