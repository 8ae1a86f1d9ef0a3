"""The training loop: :func:`fit` runs a config end to end; :func:`train_steps` and :func:`evaluate` are its parts
(in :mod:`torchstn.train.loop`, re-exported here).

A run directory holds ``config.toml`` (the resolved config), ``metrics.csv``, ``last.pt`` (the latest checkpoint,
written atomically) and, once finished, ``result.json``; with ``gif=True`` also ``gif/`` frames and ``st.gif``.
``fit(..., resume=True)`` continues from ``last.pt`` exactly: same batches, same distortions, same losses (bitwise on
CPU).

Under ``torchrun`` the model is wrapped in ``DistributedDataParallel`` and ``optim.batch_size`` is the global batch
(:mod:`torchstn.train.distributed` says how it is split and seeded); rank 0 alone logs, evaluates and checkpoints.
``run.amp`` (``off``, ``bf16``, ``fp16``) runs the forward pass under :func:`torch.autocast`; the loss is computed in
float32 and ``fp16`` scales it with a :class:`torch.amp.GradScaler` (checkpointed).
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from torchstn.errors import ConfigError
from torchstn.train import checkpoint as ckpt
from torchstn.train import distributed as dist
from torchstn.train.config import AMP_MODES, TrainConfig, from_dict, to_dict
from torchstn.train.config_io import to_toml
from torchstn.train.data import build_datasets
from torchstn.train.metrics import MetricsLogger, Progress
from torchstn.train.loop import (
    RunState,
    _check_amp,
    _theta_columns,
    _transformers,
    build_model,
    count_parameters,
    evaluate,
    train_steps,
)
from torchstn.train.schedules import build_optimizer, build_scheduler, resolve

__all__ = ["fit", "config_differences", "train_steps", "evaluate", "build_model", "count_parameters", "RunState",
           "RESUMABLE_RUN_KEYS", "AMP_MODES"]

_TIME_CLOCK_CAP = 100  # with optim.clock = "time", at most this many times optim.iterations

# run.* fields a resumed run may change (they do not change what is computed)
RESUMABLE_RUN_KEYS = ("device", "threads", "eval_every", "eval_limit", "eval_batch_size", "log_every",
                      "checkpoint_every", "time_limit", "out", "dist_timeout")  # fmt: skip


def _checkpoint_payload(state: RunState, in_shape, num_classes, final: bool,
                        rank_states: list[torch.Tensor]) -> dict[str, Any]:  # fmt: skip
    """What ``last.pt`` holds; ``rank_states``: every rank's data-generator state, in rank order."""
    payload = {"config": to_dict(state.cfg), "model": state.model.state_dict(),
               "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(), "step": state.step,
               "rng": ckpt.get_rng_state(state.generator, rank_states=rank_states), "world_size": len(rank_states),
               "version": ckpt.code_version(), "in_shape": list(in_shape), "num_classes": int(num_classes),
               "elapsed_s": state.elapsed(), "final": final}  # fmt: skip
    if state.scaler is not None:
        payload["scaler"] = state.scaler.state_dict()
    return payload


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """The ``section.field`` names in which two configs differ in what they compute (the ``run`` fields of
    :data:`RESUMABLE_RUN_KEYS` do not count). ``given`` is resolved first, as :func:`fit` does."""
    a, b = to_dict(saved), to_dict(resolve(given))
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k] and not (s == "run" and k in RESUMABLE_RUN_KEYS)]


def _check_resume_config(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The saved config with the ``run`` fields a resume may change taken from ``given``; anything else differing is
    an error (resuming a different experiment into the same directory)."""
    diff = config_differences(saved, given)
    if diff:
        raise ConfigError(f"cannot resume: the config differs from the checkpoint's in {', '.join(diff)}; "
                          "use another --out or the same config")  # fmt: skip
    return dataclasses.replace(saved, run=given.run)


def fit(cfg: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = False, gif: bool = False,
        progress: bool = True, stop_after: int | None = None, stream: TextIO | None = None,
        command: str | None = None, datasets: tuple[Any, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Train ``cfg`` (resolving its schedule), evaluate on the full test set and write the run directory.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process calls this; it joins the process group
    (:func:`torchstn.train.distributed.setup`), trains with DistributedDataParallel, and rank 0 alone writes the run
    directory and evaluates while the others wait.

    Args:
        cfg: the config; ``optim`` fields left unset come from its schedule.
        out_dir: run directory (default ``cfg.run.out``, else ``runs/run``).
        resume: continue from ``<out_dir>/last.pt`` (a fresh start if there is none).
        gif: save the transformer's outputs at each evaluation and write ``st.gif`` at the end.
        progress: show a progress bar / progress lines.
        stop_after: stop (checkpointed, not evaluated) after this iteration, as if interrupted.
        stream: where messages go (default stdout).
        command: the command line recorded in ``result.json``.
        datasets: ``(train_set, test_set)`` already built for ``cfg`` (default: built from ``cfg.data``).

    Returns:
        The result dict written to ``result.json`` (``test_error``, ``test_loss``, ``parameters``, ``steps``,
        ``wall_s``, ...), or with ``stop_after`` a dict with ``"stopped": True`` and the step; the same on every rank.

    Raises:
        ConfigError: a bad ``run.amp`` / ``run.device`` for this machine, a global batch that the processes cannot
            share evenly, or a resume into a run directory of a different experiment.
    """
    t0 = time.monotonic()
    out = Path(out_dir or cfg.run.out or "runs/run")
    cfg = resolve(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=str(out))))
    device = dist.setup(cfg.run.device, cfg.run.dist_timeout)  # joins torchrun's process group, if any
    main, world = dist.is_main(), dist.world_size()
    progress = progress and main
    say = (lambda msg: print(msg, file=stream or sys.stdout, flush=True)) if progress else (lambda msg: None)
    saved = None
    if resume:  # rank 0 reads the checkpoint and hands it to the others (no shared file system needed)
        last = out / "last.pt"
        saved = dist.broadcast_object(ckpt.load_checkpoint(last) if main and last.is_file() else None)
        if saved is not None:
            cfg = _check_resume_config(from_dict(saved["config"]), cfg)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True)
    _check_amp(cfg.run.amp, device)
    dist.split_batch(cfg.optim.batch_size, world)
    if datasets is None:
        with dist.main_first():  # rank 0 fetches and caches the data, then the others read it
            datasets = build_datasets(cfg, test=main)
    train_set, test_set = datasets
    in_shape, num_classes = tuple(train_set.image_shape), int(train_set.num_classes)
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    model = build_model(cfg, in_shape, num_classes).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    state = RunState(cfg, model, optimizer, build_scheduler(optimizer, cfg.optim), train_set,
                     dist.rank_generator(cfg.run.seed, dist.rank()), device, amp=cfg.run.amp,
                     scaler=torch.amp.GradScaler(device.type) if cfg.run.amp == "fp16" else None)  # fmt: skip
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        ckpt.set_rng_state(saved["rng"], state.generator, rank=dist.rank())
        if state.scaler is not None and "scaler" in saved:
            state.scaler.load_state_dict(saved["scaler"])
        state.step, state.elapsed_before = int(saved["step"]), float(saved["elapsed_s"])
        saved_world = int(saved.get("world_size", 1))
        say(f"resuming {out} at iteration {state.step}" + ("" if saved_world == world else
            f" with {world} processes where the checkpoint's run had {saved_world}: the same batches, but no longer "
            "the distortions of an uninterrupted run"))  # fmt: skip
    if world > 1:
        state.net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        header = f"torchstn run config (resolved); {command or ''}".strip()
        (out / "config.toml").write_text(to_toml(cfg, header=header))
    total, loc = count_parameters(model)
    say(f"model {cfg.model.name}" + (f" ({cfg.model.transform})" if cfg.model.transform else "")
        + f": {total:,} parameters ({loc:,} in localisation); data {cfg.data.variant} {in_shape}; "
        + f"{cfg.optim.schedule} schedule: {cfg.optim.optimizer} lr {cfg.optim.lr:g} batch {cfg.optim.batch_size} "
        + f"x {cfg.optim.iterations:,} iterations; device {device}, {_threads()}"
        + (f"; {world} processes ({cfg.optim.batch_size // world} images each)" if world > 1 else "")
        + ("" if cfg.run.amp == "off" else f"; amp {cfg.run.amp}"))

    sts = list(_transformers(model))
    columns = _theta_columns(sts) if sts else ()
    logger = MetricsLogger(out, columns, resume_step=state.step if saved else None) if main else None
    iterations = cfg.optim.iterations
    by_time = cfg.optim.clock == "time"
    cap = iterations * _TIME_CLOCK_CAP if by_time else iterations  # by time, iterations is only the schedule's scale
    stop = cap if stop_after is None else min(cap, stop_after)
    every = [e for e in (cfg.run.eval_every, cfg.run.checkpoint_every) if e > 0]
    gif_every = (cfg.run.eval_every or max(1, iterations // 10)) if gif and sts else 0  # the same on every rank
    frames = _GifFrames(out, model, test_set) if gif_every and main else None
    if frames is not None and state.step == 0:
        frames.add(0)
    time_limit_s = None if cfg.run.time_limit is None else cfg.run.time_limit * 60
    bar = Progress(iterations, state.step, every=cfg.run.log_every, enabled=progress, stream=stream)
    finished_in_time = True
    state.session_start = time.monotonic()

    def save(final: bool = False) -> None:  # a collective under DDP: every rank calls it at the same steps
        rank_states = dist.all_gather_states(state.generator)  # also the barrier after rank 0's evaluation
        if main:
            ckpt.save_checkpoint(out / "last.pt", _checkpoint_payload(state, in_shape, num_classes, final, rank_states))

    try:
        while state.step < stop and finished_in_time:
            nxt = min([stop] + [(state.step // e + 1) * e for e in every + [gif_every] if e > 0])
            finished_in_time = train_steps(state, nxt, logger=logger, progress=bar, time_limit_s=time_limit_s)
            if main and cfg.run.eval_every and state.step % cfg.run.eval_every == 0 and state.step < iterations:
                res = evaluate(model, test_set, batch_size=cfg.run.eval_batch_size, device=device,
                               limit=cfg.run.eval_limit, amp=cfg.run.amp)  # fmt: skip
                logger.log({"step": state.step, "phase": "test", "loss": res["loss"], "error": res["error"],
                            "elapsed_s": state.elapsed()})  # fmt: skip
                bar.write(f"iteration {state.step}: test error {res['error']:.2f}% (loss {res['loss']:.4f}, "
                          f"{res['n']} images)")  # fmt: skip
            if frames is not None and state.step % gif_every == 0:
                frames.add(state.step)
            save()
    except KeyboardInterrupt:
        if world == 1:  # under DDP the ranks may stand at different steps: the last periodic checkpoint stands
            save()
        bar.close()
        if logger is not None:
            logger.close()
        say(f"interrupted at iteration {state.step}; " + ("checkpoint saved: continue" if world == 1 else
            "continue from the last checkpoint") + f" with --resume --out {out}")  # fmt: skip
        raise
    bar.close()
    completed = not finished_in_time if by_time else state.step >= iterations
    if not finished_in_time and not by_time:
        say(f"time limit of {cfg.run.time_limit:g} min reached at iteration {state.step}/{iterations}")
    if stop_after is not None and state.step < cap and finished_in_time:
        if logger is not None:
            logger.close()
        return {"stopped": True, "step": state.step, "out": str(out)}
    train_s = state.elapsed()
    result = None
    if main:
        res = evaluate(model, test_set, batch_size=cfg.run.eval_batch_size, device=device, amp=cfg.run.amp)
        logger.log({"step": state.step, "phase": "test", "loss": res["loss"], "error": res["error"],
                    "elapsed_s": state.elapsed()})  # fmt: skip
        logger.close()
    save(final=True)
    if main:
        if frames is not None:
            frames.add(state.step)
            frames.write_gif(out / "st.gif")
        result = {"test_error": res["error"], "test_loss": res["loss"], "test_images": res["n"], "steps": state.step,
                  "iterations": iterations, "completed": completed, "parameters": total,
                  "localisation_parameters": loc, "train_s": train_s, "wall_s": time.monotonic() - t0,
                  "device": _device_name(device), "threads": torch.get_num_threads(), "processes": world,
                  "amp": cfg.run.amp, "command": command or "", "version": ckpt.code_version(),
                  "config": to_dict(cfg)}  # fmt: skip
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        say(f"test error {res['error']:.2f}% on {res['n']:,} images after {state.step:,} iterations "
            f"({train_s / 60:.1f} min training); run directory {out}")
    return dist.broadcast_object(result)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {_threads()})"


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread{'' if n == 1 else 's'}"


class _GifFrames:
    """Saves the transformer's output on a fixed set of test images as PNG frames, then joins them into a GIF."""

    def __init__(self, out: Path, model: nn.Module, test_set, n: int = 16):
        self.dir, self.model = out / "gif", model
        self.images, _ = test_set.batch(torch.arange(min(n, len(test_set))))
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, step: int) -> None:
        from torchstn import viz

        viz.save_frame(self.model, self.images, self.dir / f"frame_{step:08d}.png", title=f"iteration {step}")

    def write_gif(self, path: Path) -> None:
        from torchstn import viz

        viz.write_gif(sorted(self.dir.glob("frame_*.png")), path)
