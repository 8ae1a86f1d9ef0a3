"""The README demo: fetch MNIST, train an ST-CNN (affine) on RTS within a minutes budget, evaluate, draw.

The budget covers everything from the call on: fetching, building the data sets (rendering the fixed test set),
a short throughput calibration, training, the evaluation on the whole 10,000-image fixed RTS test set and the
figure. Training gets what is left after an estimate of the rest, as ``run.time_limit``; the ``demo`` schedule runs on
that clock (``optim.clock = "time"``: warm-up then cosine decay over the minutes, however busy the machine is). The
calibration times a few iterations on a throw-away copy of the model to estimate ``optim.iterations``, which only
sets the schedule's scale: the warm-up is 5% of it. The resolved config is saved in the run directory.

Running the demo again into the same directory replaces the earlier demo run there (and says so); a directory that
holds any other run is refused, as ``torchstn train`` refuses it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch

from torchstn.experiments.engine.config import TrainConfig, resolve
from torchstn.experiments.engine.config_io import apply_overrides, load_config
from torchstn.experiments.engine.data import build_datasets, data_generator
from torchstn.experiments.engine.schedules import ResolvedOptim
from torchstn.experiments.engine.steps import train_steps
from torchstn.experiments.engine.trainer import fit, new_state, task_of

__all__ = ["run_demo", "calibrate", "PAPER_RTS"]

#: Paper, Table 1, RTS column (% test error).
PAPER_RTS = {"ST-CNN": 0.5, "CNN": 0.8}
_EVAL_COST = 0.4  # one test image costs about this fraction of a training image (forward only)
_MARGIN_S = 15.0  # starting Python and torch, the figure, checkpoint and result files


def calibrate(cfg: TrainConfig, train_set, steps: int = 5, warmup: int = 2) -> float:
    """Seconds per training iteration of ``cfg``: the fastest of ``steps`` iterations of the engine's own step
    (:func:`~torchstn.experiments.engine.steps.train_steps`) after ``warmup`` untimed ones (the first iterations set
    up kernels and allocators), on a throw-away run state with data from a throw-away generator, so the real run is
    untouched."""
    cfg = resolve(cfg)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, clock="steps"))  # no time budget to follow
    state = new_state(cfg, task_of(cfg), train_set, torch.device(cfg.run.device))
    state.generator = data_generator(cfg.run.seed + 12345)
    times = []
    for _ in range(steps + warmup):
        t = time.perf_counter()
        train_steps(state, state.step + 1)
        times.append(time.perf_counter() - t)
    return min(times[warmup:])


def _a_demo(out: str | Path) -> bool:
    """Whether ``out`` holds an earlier demo run (its config was written by ``torchstn demo``)."""
    config = Path(out) / "config.toml"
    try:
        with open(config) as f:
            return "; torchstn demo " in f.readline()
    except OSError:
        return False


def _render_datasets(cfg: TrainConfig, say: Callable[[str], None]) -> tuple[Any, Any]:
    """The demo's training and fixed test sets, the test set rendered now (so its time is not taken from training)."""
    t = time.monotonic()
    train_set, test_set = build_datasets(cfg)
    assert train_set is not None and test_set is not None  # both asked for (train=True, test=True)
    test_set.batch(torch.arange(1))
    say(
        f"data: RTS {tuple(train_set.image_shape)}, {len(train_set):,} training digits re-distorted every batch, "
        f"{len(test_set):,} fixed test images ({time.monotonic() - t:.1f} s)"
    )
    return train_set, test_set


def _pick_threads(
    cfg: TrainConfig, train_set: Any, threads: int | None, say: Callable[[str], None]
) -> tuple[int | None, float]:
    """``(threads, seconds per iteration)``: the given thread count, else the fastest of 1 and all."""
    if threads:
        return threads, calibrate(cfg, train_set)
    # fewest threads can win: on a small or busy machine, threads that wait for each other cost time
    timings = {}
    for n in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(n)
        timings[n] = calibrate(cfg, train_set)
    threads = min(timings, key=timings.__getitem__)
    torch.set_num_threads(threads)
    tried = ", ".join(f"{n}: {t * 1000:.0f} ms" for n, t in timings.items())
    say(f"threads: {tried} per iteration -> {threads}")
    return threads, timings[threads]


def _fit_schedule(
    cfg: TrainConfig, s_per_iter: float, seconds_left: float, n_train: int, n_test: int, say: Callable[[str], None]
) -> TrainConfig:
    """``cfg`` with as many iterations (and a warm-up and time limit to match) as ``seconds_left`` allows after the
    evaluation."""
    bs = ResolvedOptim.of(resolve(cfg).optim).batch_size
    eval_s = _EVAL_COST * s_per_iter / bs * n_test
    budget = seconds_left - eval_s - _MARGIN_S
    iterations = max(50, int(budget / s_per_iter))
    say(
        f"calibration: {s_per_iter * 1000:.0f} ms per iteration of {bs} ({bs / s_per_iter:.0f} img/s) -> "
        f"{iterations:,} iterations (~{iterations * bs / n_train:.1f} epochs) in {max(budget, 0) / 60:.1f} min"
    )
    return apply_overrides(
        cfg,
        [
            f"optim.iterations={iterations}",
            f"optim.warmup={max(1, iterations // 20)}",
            f"run.time_limit={max(budget, 5) / 60:.4f}",
        ],
    )


def _save_figure(out: str | Path, test_set: Any) -> Path:
    """The trained model's ST figure on 8 test images, saved as ``<out>/st.png``."""
    figure = Path(out) / "st.png"
    from torchstn.experiments import viz
    from torchstn.experiments.engine.runs import load_run

    _, model, _ = load_run(out)
    images, labels = test_set.batch(torch.arange(8))
    viz.st_figure(
        model,
        images,
        figure,
        labels=labels,
        title="ST-CNN (affine) on RTS: inputs with the sampling grid, and the transformer's outputs",
    )
    return figure


def run_demo(
    minutes: float = 5.0,
    out: str | Path = "runs/demo",
    *,
    threads: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Run the demo end to end within ``minutes`` (see the module docstring) and return the training result, with
    ``total_s`` (the whole demo) and ``figure`` added.
    """
    t0 = time.monotonic()
    say = lambda msg: print(msg, file=stream or sys.stdout, flush=True)  # noqa: E731
    if threads:
        torch.set_num_threads(threads)
    from torchstn.data.mnist import fetch_mnist

    say(f"MNIST: {fetch_mnist()}")
    cfg = apply_overrides(load_config("demo"), [f"run.out={out}", *overrides])
    train_set, test_set = _render_datasets(cfg, say)
    threads, s_per_iter = _pick_threads(cfg, train_set, threads, say)
    seconds_left = minutes * 60 - (time.monotonic() - t0)
    cfg = _fit_schedule(cfg, s_per_iter, seconds_left, len(train_set), len(test_set), say)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, threads=threads))
    result = fit(
        cfg,
        out,
        progress=progress,
        stream=stream,
        datasets=(train_set, test_set),
        overwrite=_a_demo(out),
        command=f"torchstn demo --minutes {minutes:g} --out {out}",
    )
    figure = _save_figure(out, test_set)
    total = time.monotonic() - t0
    say("")
    say(
        f"RTS test error ({result['test_images']:,} images): ours {result['test_error']:.2f}% after "
        f"{total / 60:.1f} min on {result['device']}"
    )
    say(f"paper (150k iterations): ST-CNN {PAPER_RTS['ST-CNN']}%, CNN {PAPER_RTS['CNN']}%")
    say(f"figure: {figure}   run: {out}")
    return {**result, "total_s": total, "figure": str(figure)}
