"""Part 4: Table 1's RTS ST-CNN (affine) on the paper's schedule (150k SGD iterations of batch 256), as far as the
time left allows, resumable on the next lease.

The cell is ``torchstn train table1:RTS/st_cnn_affine --schedule paper`` through its Python API
(:func:`~torchstn.experiments.engine.trainer.fit`, ``resume="auto"``) in the run folder ``--run-dir`` (default: under
``--out``, so it comes back from a device machine). ``--resume-from DIR`` first copies an earlier lease's run folder
there. A short probe (:data:`PROBE` iterations) measures the engine's own step time; the run then goes on, in
chunks, to the iteration that fits the time left, less :data:`RESERVE_S` for the evaluation and the report, and
stops checkpointed.
The report gets the iteration reached, images/s, and the test error on the 10,000 fixed test images: the final one
when the schedule is done, else that of the checkpoint (a partial run, said so).

MNIST must be on the machine (a device machine reaches no network): ``--mnist DIR`` (the four IDX files, ``.gz``
or not; it becomes ``$TORCHSTN_DATA``) or torchstn's cache; the part fails at once, with that hint, without it. The dry run trains on synthetic digits instead, 40 iterations of batch 8.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import time
from pathlib import Path

from gpu.report import Context
from torchstn.data.mnist import load_mnist
from torchstn.errors import DataError
from torchstn.experiments.engine.config_io import load_config
from torchstn.experiments.engine.runs import RUN_FILES, load_run
from torchstn.experiments.engine.trainer import fit, task_of

CELL = "table1:RTS/st_cnn_affine"
PROBE = {"real": 300, "dry": 4}
RESERVE_S = {"real": 45.0, "dry": 3.0}


def cell_config(ctx: Context):
    overrides = ["optim.schedule=paper", f"run.device={ctx.device}", "run.amp=off", "run.log_every=1000"]
    overrides.append("run.checkpoint_every=5000")
    if ctx.dry:
        overrides += ["data.synthetic=300", "optim.iterations=40", "optim.batch_size=8", "run.checkpoint_every=10"]
    return load_config(CELL, overrides)


def _check_mnist(ctx: Context) -> None:
    """Point ``$TORCHSTN_DATA`` at ``--mnist`` (not ``data.root``: a resume on a machine where the folder has another
    path would then be another config) and make sure MNIST is there, before the engine would try the network."""
    if ctx.options.get("mnist"):
        os.environ["TORCHSTN_DATA"] = str(Path(ctx.options["mnist"]).resolve())
    try:
        load_mnist("test", source="local")
    except DataError as e:
        raise DataError(f"MNIST is not on this machine: pass --mnist DIR (the four IDX files). {e}") from e


def _prepare_run_dir(ctx: Context) -> Path:
    run_dir = Path(ctx.options.get("run_dir") or ctx.out / "rts_st_cnn_affine")
    earlier = ctx.options.get("resume_from")
    if earlier and not (run_dir / "last.pt").exists():
        if not (Path(earlier) / "last.pt").is_file():
            raise FileNotFoundError(f"--resume-from {earlier}: no last.pt there")
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (Path(earlier) / name).is_file():
                shutil.copy2(Path(earlier) / name, run_dir / name)
    return run_dir


def _step_of(run_dir: Path) -> int:
    if not (run_dir / "last.pt").exists():
        return 0
    return int(load_run(run_dir)[2].get("step", 0))


def _train(ctx: Context, cfg, run_dir: Path, datasets, log) -> tuple[dict, list[dict]]:
    """Train in chunks until the time left (less :data:`RESERVE_S`) is spent or the schedule is done: first
    :data:`PROBE` iterations, then each chunk as long as the last one's rate says fits. Every ``fit`` call's setup
    counts in its rate, so the estimate errs long and the run stops in time; the chunks grow, so it is amortised."""
    mode = "dry" if ctx.dry else "real"
    chunks: list[dict] = []
    res, size = {}, PROBE[mode]
    while size >= PROBE[mode] and "test_error" not in res:
        before, t0 = _step_of(run_dir), time.monotonic()
        res = fit(cfg, run_dir, resume="auto", stop_after=before + size, datasets=datasets, stream=log)
        done, wall = _step_of(run_dir) - before, time.monotonic() - t0
        chunks.append({"from": before, "to": before + done, "wall_s": round(wall, 2)})
        if done == 0:  # the schedule was already done (fit evaluated it again)
            break
        size = math.floor(0.9 * (ctx.seconds_left() - RESERVE_S[mode]) * done / wall)
    return res, chunks


def run(ctx: Context) -> dict:
    cfg = cell_config(ctx)
    if not ctx.dry:
        _check_mnist(ctx)
    run_dir = _prepare_run_dir(ctx)
    datasets = task_of(cfg).datasets()  # built once for every fit call (distorting MNIST is not free)
    log = io.StringIO()
    start = _step_of(run_dir)
    res, chunks = _train(ctx, cfg, run_dir, datasets, log)
    saved_cfg, model, payload = load_run(run_dir, ctx.device)
    total = saved_cfg.optim.iterations
    if "test_error" in res:  # the schedule is done: fit evaluated it
        error, final = res["test_error"], True
    else:  # a partial run: evaluate its checkpoint
        ev = task_of(saved_cfg).evaluate(model, datasets[1], batch_size=500, device=ctx.device)
        assert ev is not None  # only a should_stop callback abandons an evaluation
        error, final = ev["error"], False
    step = int(payload.get("step", 0))
    batch = saved_cfg.optim.batch_size
    longest = max(chunks, key=lambda c: c["to"] - c["from"])  # the least setup per iteration: the steady rate
    ips = (longest["to"] - longest["from"]) * batch / longest["wall_s"] if longest["wall_s"] > 0 else math.nan
    c = ctx.checks
    c.add("the run moved on (or had finished)", step > start or final, start=start, step=step)
    c.add("test error is a number", math.isfinite(error), test_error=error)
    c.add("checkpoint saved for the next lease", (run_dir / "last.pt").is_file(), step=step)
    return {
        "summary": f"iteration {step:,}/{total:,} ({'final' if final else 'partial: resume on the next lease'}); "
        f"test error {error:.2f}% (paper 0.5%); {ips:,.0f} images/s",
        "cell": CELL,
        "run_dir": str(run_dir),
        "data": "synthetic digits" if cfg.data.synthetic else "MNIST",
        "start_step": start,
        "step": step,
        "iterations": total,
        "final": final,
        "test_error": error,
        "images_per_s": ips,
        "chunks": chunks,
        "timed_step_s": ctx.options.get("step_s"),
        "log_tail": log.getvalue()[-1500:],
    }
