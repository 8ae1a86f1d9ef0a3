"""Part 2d: fp16 training with the gradient scaler (``run.amp = "fp16"``) through the engine, against fp32.

Two runs of the same config (an ST-CNN, affine, on synthetic RTS digits generated offline, a few hundred Adam steps):
``fp16`` must end with a finite loss, a saved scaler state (the engine's GradScaler ran) and a test error at most
:data:`MARGIN` points over the fp32 run's. fp16 needs CUDA, so the dry run trains with ``bf16`` (no scaler) instead.
"""

from __future__ import annotations

import io
import math

from gpu.report import Context
from torchstn.experiments.engine.checkpoint import load_checkpoint
from torchstn.experiments.engine.config import from_dict
from torchstn.experiments.engine.trainer import fit

#: largest test-error excess (percentage points) of the fp16 run over the fp32 one (or a quarter of fp32's error)
MARGIN = 3.0


def config(ctx: Context, amp: str):
    s = ctx.sizes
    return from_dict(
        {
            "model": {"name": "st_cnn", "transform": "affine", "st_pool": True},
            "data": {"variant": "RTS", "synthetic": s.synthetic},
            "optim": {"schedule": "cpu", "lr": 0.003, "batch_size": s.train_batch, "iterations": s.train_steps},
            "run": {"device": str(ctx.device), "amp": amp, "log_every": max(1, s.train_steps // 3), "seed": 0},
        }
    )


def run(ctx: Context) -> dict:
    half = "bf16" if ctx.device.type == "cpu" else "fp16"
    results = {}
    for amp in ("off", half):
        out = ctx.scratch / f"amp_{amp}"
        log = io.StringIO()
        res = fit(config(ctx, amp), out, overwrite=True, progress=True, stream=log)
        saved = load_checkpoint(out / "last.pt")
        scaler = saved.get("scaler")
        results[amp] = {
            "test_error": res["test_error"],
            "test_loss": res["test_loss"],
            "train_s": round(res["train_s"], 2),
            "scaler_scale": None if scaler is None else float(scaler.get("scale", math.nan)),
            "log_tail": log.getvalue()[-600:],
        }
    fp32, low = results["off"], results[half]
    c = ctx.checks
    c.add(f"{half} test loss finite", math.isfinite(low["test_loss"]), test_loss=low["test_loss"])
    if half == "fp16":
        c.add("fp16 checkpoint holds the GradScaler state", low["scaler_scale"] is not None, scale=low["scaler_scale"])
    if not ctx.dry:  # a few steps of the dry run say nothing about accuracy
        diff, margin = low["test_error"] - fp32["test_error"], max(MARGIN, 0.25 * fp32["test_error"])
        c.add(f"{half} test error at most fp32's + {margin:.1f} points", diff <= margin, diff=diff)
    return {
        "summary": f"{ctx.sizes.train_steps} steps: test error fp32 {fp32['test_error']:.2f}%, "
        f"{half} {low['test_error']:.2f}%" + (f" (scale {low['scaler_scale']:g})" if low["scaler_scale"] else ""),
        "amp": half,
        "runs": results,
    }
