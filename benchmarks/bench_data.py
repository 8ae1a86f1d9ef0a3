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

Run: ``python benchmarks/bench_data.py`` (``--help`` for options).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, table, time_interleaved  # noqa: E402

from torchstn.data.datasets import DistortedMNIST, MNISTAddition, synthetic_digits  # noqa: E402
from torchstn.data.distortions import Extrude3D, TranslateClutter, get_distortion  # noqa: E402

BATCH = 256
GOALS = {"RTS": 20_000, "E": 5_000}  # samples/s of the float32 total
SLOW_REPEATS = 8  # cap on samples for the 3D cases (one call takes about half a second)
CASES = [{"variant": v, "path": "float32"} for v in ("plain", "R", "RTS", "P", "E", "TC", "3D")]
CASES += [{"variant": v, "path": "float64"} for v in ("R", "RTS", "P", "E", "TC")]
CASES += [{"variant": v, "path": "dataset"} for v in ("RTS", "E", "TC", "addition")]


def _distortion(variant: str, pool: torch.Tensor):
    if variant == "TC":
        return TranslateClutter(pool=pool)
    if variant == "3D":
        return Extrude3D()
    return get_distortion(variant)


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
    return {
        "total": lambda: d.apply(x, d.sample_params(g, BATCH), compute_dtype=cd),
        "params": lambda: d.sample_params(g, BATCH),
        "apply": lambda: d.apply(x, fixed, compute_dtype=cd),
    }


def run_case(case: dict, method: Method) -> dict:
    if case["variant"] == "3D":
        method = dataclasses.replace(method, repeats=min(method.repeats, SLOW_REPEATS), warmup=min(method.warmup, 2))
    stats = time_interleaved(_fns(case["variant"], case["path"]), method)
    res = {"stats": stats, "method": dataclasses.asdict(method), "batch": BATCH,
           "samples_per_s": BATCH / (stats["total"]["median_ms"] / 1e3),
           "samples_per_s_q1_q3": [BATCH / (stats["total"]["q3_ms"] / 1e3), BATCH / (stats["total"]["q1_ms"] / 1e3)]}
    goal = GOALS.get(case["variant"]) if case["path"] == "float32" else None
    if goal:
        res["goal_samples_per_s"] = goal
        res["goal_met"] = res["samples_per_s_q1_q3"][0] >= goal
    return res


def render(doc: dict) -> str:
    out = [f"Command: `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296 {doc['command']}`  ",
           _common.env_line(doc), "",
           f"Batch {BATCH}. Time per batch in ms, median [IQR]; samples/s = {BATCH} / median of `total` "
           "(in brackets: from the upper and lower quartile).", ""]
    rows = []
    for res in doc["cases"]:
        c, s = res["case"], res["stats"]
        lo, hi = res["samples_per_s_q1_q3"]
        goal = ""
        if "goal_samples_per_s" in res:
            goal = f">= {res['goal_samples_per_s']:,}: " + ("met" if res["goal_met"] else "**not met**")
        rows.append([c["variant"], c["path"], fmt_ms(s["total"]), f"{res['samples_per_s']:,.0f} [{lo:,.0f}-{hi:,.0f}]",
                     fmt_ms(s["params"]) if "params" in s else "-", fmt_ms(s["apply"]) if "apply" in s else "-",
                     goal])
    out.append(table(["variant", "path", "total ms", "samples/s", "sample_params ms", "apply ms", "goal"], rows))
    return "\n".join(out)


if __name__ == "__main__":
    _common.main("data", __doc__.splitlines()[0], CASES, run_case, render)
