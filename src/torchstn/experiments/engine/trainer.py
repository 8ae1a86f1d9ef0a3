"""The training loop: :func:`fit` runs a config end to end; :func:`train_steps` and :func:`evaluate` are its parts
(in :mod:`torchstn.experiments.engine.steps`, re-exported here).

The loop itself, with its evaluations, checkpoints and stops, is a :class:`~torchstn.experiments.engine.session.Session`.
A run directory holds ``config.toml`` (the resolved config), ``metrics.csv``, ``last.pt`` (the latest checkpoint,
written atomically) and, once finished, ``result.json``; with ``gif=True`` also ``gif/`` frames and ``st.gif``.
``fit(..., resume=True)`` continues from ``last.pt`` exactly: same batches, same distortions, same losses (bitwise on
CPU), also after SIGINT or SIGTERM, which stop at an iteration boundary (:mod:`torchstn.experiments.engine.signals`).

Under ``torchrun`` the model is wrapped in ``DistributedDataParallel`` and ``optim.batch_size`` is the global batch
(:mod:`torchstn.experiments.engine.distributed` says how it is split and seeded); rank 0 alone logs, evaluates and checkpoints.
``run.amp`` (``off``, ``bf16``, ``fp16``) runs the forward pass under :func:`torch.autocast`; the loss is computed in
float32 and ``fp16`` scales it with a :class:`torch.amp.GradScaler` (checkpointed). Its default ``auto`` is ``bf16``
on a CPU with native bfloat16 for the tasks checked with it (:func:`~torchstn.experiments.engine.config.resolve_run`).
On a CPU the process keeps the memory a step frees for the next (:func:`torchstn.nn.hold_freed_memory`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from torchstn._io import write_text_atomic
from torchstn.errors import ConfigError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import distributed as dist
from torchstn.experiments.engine import runs
from torchstn.experiments.engine.config import AMP_MODES, TrainConfig, from_dict, resolve, to_dict
from torchstn.experiments.engine.config_io import to_toml
from torchstn.experiments.engine.evaluation import check_amp, evaluate
from torchstn.experiments.engine.schedules import ResolvedOptim, build_optimizer, build_scheduler
from torchstn.experiments.engine.session import Session
from torchstn.experiments.engine.signals import StopRequest
from torchstn.experiments.engine.steps import RunState, parameter_counts, train_steps
from torchstn.experiments.engine.tasks import TASKS, Task
from torchstn.nn import hold_freed_memory, to_channels_last

__all__ = [
    "fit",
    "config_differences",
    "train_steps",
    "evaluate",
    "RunState",
    "RESUMABLE_RUN_KEYS",
    "AMP_MODES",
    "task_of",
    "new_state",
]

# run.* fields a resumed run may change (they do not change what is computed)
RESUMABLE_RUN_KEYS = (
    "device",
    "threads",
    "eval_every",
    "eval_limit",
    "eval_batch_size",
    "log_every",
    "checkpoint_every",
    "time_limit",
    "out",
    "dist_timeout",
    "memory_format",
)


def config_differences(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """The ``section.field`` names in which two configs differ in what they compute (the ``run`` fields of
    :data:`RESUMABLE_RUN_KEYS` do not count). ``given`` is resolved first, as :func:`fit` does, except that its
    ``run.amp = "auto"`` stands for the saved run's mode (what a resume keeps)."""
    a, b = to_dict(saved), to_dict(resolve(_keep_saved_amp(saved, given)))
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k] and not (s == "run" and k in RESUMABLE_RUN_KEYS)]


def _keep_saved_amp(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """``given`` with ``run.amp = "auto"`` replaced by the saved run's mode, so that a resume computes what the run
    computed, on any machine."""
    if given.run.amp != "auto":
        return given
    return dataclasses.replace(given, run=dataclasses.replace(given.run, amp=saved.run.amp))


def _check_resume_config(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    """The saved config with the ``run`` fields a resume may change taken from ``given`` (unresolved: its ``run.amp =
    "auto"`` keeps the saved mode); anything else differing is an error (resuming a different experiment into the
    same directory)."""
    diff = config_differences(saved, given)
    if diff:
        raise ConfigError(
            f"cannot resume: the config differs from the checkpoint's in {', '.join(diff)}; "
            "use another --out or the same config"
        )
    return dataclasses.replace(saved, run=resolve(_keep_saved_amp(saved, given)).run)


def fit(
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool | str = False,
    overwrite: bool = False,
    gif: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    stream: TextIO | None = None,
    command: str | None = None,
    datasets: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` (resolving its schedule), evaluate on the full test set and write the run directory.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process calls this; it joins the process group
    (:func:`torchstn.experiments.engine.distributed.setup`), trains with DistributedDataParallel, and rank 0 alone writes the run
    directory and evaluates while the others wait.

    SIGINT (Ctrl-C) and SIGTERM stop training cleanly (:mod:`torchstn.experiments.engine.signals`): the iteration under way is
    finished (an evaluation is abandoned between two batches), the checkpoint of that iteration boundary is written,
    and :class:`~torchstn.experiments.engine.signals.TrainingInterrupted` is raised; ``resume=True`` then continues exactly as if
    nothing had happened. A second signal stops at once, without a checkpoint.

    Args:
        cfg: the config; ``optim`` fields left unset come from its schedule.
        out_dir: run directory (default ``cfg.run.out``, else ``runs/run``).
        resume: ``True``: continue from ``<out_dir>/last.pt``, which must exist; ``"auto"``: continue from it if it
            exists, else start afresh (clearing what an earlier try left there); ``False``: a new run, into a
            directory that holds no run unless ``overwrite``.
        overwrite: delete the run ``out_dir`` holds (:func:`torchstn.experiments.engine.runs.clear_run`) and start afresh.
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
            share evenly, a resume into a run directory of a different experiment or without a checkpoint, or a new
            run into a directory that holds one (without ``overwrite``).
        TrainingInterrupted: a signal stopped the run (a ``KeyboardInterrupt``; its ``step`` is the checkpoint's).
    """
    t0 = time.monotonic()
    state, session, saved = _setup(
        cfg,
        out_dir,
        resume=resume,
        overwrite=overwrite,
        gif=gif,
        progress=progress,
        stream=stream,
        command=command,
        datasets=datasets,
    )
    out, main = session.out, dist.is_main()
    with StopRequest(notice=main) as stop:  # from the opening line on, a signal stops at an iteration boundary
        session.say(_describe(state, session.in_shape, dist.world_size()))
        stop.out, stop.last_saved = str(out), state.step if saved is not None else None
        state.stop = stop
        try:
            stopped = session.train(stop_after)
            if stopped is not None:
                return stopped
            res = session.final_evaluation()
        finally:
            session.close()
    result: dict[str, Any] | None = None
    if main:
        assert res is not None  # rank 0 evaluated (a stop during the evaluation raised TrainingInterrupted)
        result = _finish(state, session, res, wall_s=time.monotonic() - t0, command=command)
    result = dist.broadcast_object(result)
    assert result is not None  # rank 0's result, which every rank now holds
    return result


def task_of(cfg: TrainConfig) -> Task:
    """The :class:`~torchstn.experiments.engine.tasks.Task` that trains ``cfg`` (its ``[task]`` section)."""
    return TASKS.get(cfg.task.name)(cfg)


def _setup(
    cfg: TrainConfig, out_dir, *, resume, overwrite, gif, progress, stream, command, datasets
) -> tuple[RunState, Session, dict | None]:
    """Everything before the first step: the resolved config, the process group, the run directory (checked, or
    the checkpoint to resume), the datasets, the model and optimiser (restored on a resume) and the session."""
    out = Path(out_dir or cfg.run.out or "runs/run")
    asked = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=str(out)))
    cfg = resolve(asked)
    device = dist.setup(cfg.run.device, cfg.run.dist_timeout)  # joins torchrun's process group, if any
    main, world = dist.is_main(), dist.world_size()
    progress = progress and main
    say = (lambda msg: print(msg, file=stream or sys.stdout, flush=True)) if progress else (lambda msg: None)
    saved = _open_run_dir(out, resume, overwrite, say)
    if saved is not None:
        cfg = _check_resume_config(from_dict(saved["config"]), asked)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True)
    check_amp(cfg.run.amp, device)
    dist.split_batch(ResolvedOptim.of(cfg.optim).batch_size, world)
    task = task_of(cfg)
    if datasets is None:
        with dist.main_first():  # rank 0 fetches and caches the data, then the others read it
            datasets = task.datasets(test=main)
    state = new_state(cfg, task, datasets[0], device)
    if saved is not None:
        _restore(state, saved)
        saved_world = int(saved.get("world_size", 1))
        say(
            f"resuming {out} at iteration {state.step}"
            + (
                ""
                if saved_world == world
                else f" with {world} processes where the checkpoint's run had {saved_world}: the same batches, but no longer "
                "the distortions of an uninterrupted run"
            )
        )
    if world > 1:
        state.net = nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device] if device.type == "cuda" else None
        )
    if main:
        out.mkdir(parents=True, exist_ok=True)
        header = f"torchstn run config (resolved); {command or ''}".strip()
        write_text_atomic(out / "config.toml", to_toml(cfg, header=header))
    session = Session(
        state,
        out,
        datasets[1],
        say=say,
        progress=progress,
        stream=stream,
        gif=gif,
        resumed=saved is not None,
        resumed_final=bool(saved and saved.get("final")),
    )
    return state, session, saved


def _finish(
    state: RunState, session: Session, res: dict[str, Any], *, wall_s: float, command: str | None
) -> dict[str, Any]:
    """Write ``result.json`` (rank 0) and say the result; returns what it wrote."""
    cfg, out = state.cfg, session.out
    total, loc = parameter_counts(state.model)
    train_s = state.elapsed()
    result = {
        "test_error": res["error"],
        "test_loss": res["loss"],
        "test_images": res["n"],
        "steps": state.step,
        "iterations": cfg.optim.iterations,
        "completed": session.completed,
        "parameters": total,
        "localisation_parameters": loc,
        "train_s": train_s,
        "wall_s": wall_s,
        "device": _device_name(state.device),
        "threads": torch.get_num_threads(),
        "processes": dist.world_size(),
        "amp": cfg.run.amp,
        "memory_format": cfg.run.memory_format,
        "command": command or "",
        "version": ckpt.code_version(),
        "config": to_dict(cfg),
    }
    result.update({f"test_{k}": v for k, v in res.items() if k not in ("error", "loss", "n")})  # a task's extras
    write_text_atomic(out / "result.json", json.dumps(result, indent=2) + "\n")
    session.say(
        f"test error {res['error']:.2f}% on {res['n']:,} images after {state.step:,} iterations "
        + (f"(weight average; raw weights {res['error_raw']:.2f}%) " if "error_raw" in res else "")
        + f"({train_s / 60:.1f} min training); run directory {out}"
    )
    return result


def _open_run_dir(out: Path, resume: bool | str, overwrite: bool, say: Callable[[str], None]) -> dict | None:
    """The checkpoint to resume from (``None``: a fresh run), after the checks of ``resume`` and ``overwrite``
    against what ``out`` holds. Rank 0 looks and tells the others (no shared file system needed)."""
    if resume not in (False, True, "auto"):
        raise ConfigError(f"resume must be True, False or 'auto', got {resume!r}")
    if resume and overwrite:
        raise ConfigError("--resume continues the run in OUT and --overwrite deletes it: choose one")
    main, last = dist.is_main(), out / "last.pt"
    if resume:
        saved = dist.broadcast_object(ckpt.load_checkpoint(last) if main and last.is_file() else None)
        if saved is not None:
            return saved
        if resume is True:
            raise ConfigError(
                f"cannot resume: {out} holds no checkpoint ({last} does not exist); check --out, or "
                "train without --resume to start afresh"
            )
        overwrite = True  # "auto": what an earlier try left there without a checkpoint is replaced
    found = dist.broadcast_object(runs.run_files(out) if main else None)
    if found and not overwrite:
        raise ConfigError(
            f"{out} already holds a run ({', '.join(found)}): train into a new directory (--out NEW), "
            "continue it (--resume) or replace it (--overwrite)"
        )
    if found and main:
        runs.clear_run(out)
        say(f"replacing the run in {out} (deleted {', '.join(found)})")
    return None


def new_state(cfg: TrainConfig, task: Task, train_set, device: torch.device) -> RunState:
    """A fresh run: seeded, the model built and on ``device``, optimiser, scheduler, this rank's data generator, and
    with ``optim.ema`` the weight average (on rank 0: :class:`torch.optim.swa_utils.AveragedModel`, buffers
    included). On a CPU the process keeps freed memory from here on (:func:`torchstn.nn.hold_freed_memory`)."""
    if device.type == "cpu":
        hold_freed_memory()  # each step reuses the pages of the last instead of faulting in fresh ones
    in_shape, num_classes = tuple(train_set.image_shape), int(train_set.num_classes)
    torch.manual_seed(cfg.run.seed)
    random.seed(cfg.run.seed)
    model = task.build_model(in_shape, num_classes).to(device)
    if cfg.run.memory_format == "channels_last":
        to_channels_last(model)
    optimizer = build_optimizer(model, cfg.optim, task.param_groups(model))
    ema = None
    if cfg.optim.ema > 0 and dist.is_main():  # rank 0 alone evaluates and checkpoints: the others need none
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.optim.ema), use_buffers=True
        )
    return RunState(
        cfg,
        model,
        optimizer,
        build_scheduler(optimizer, cfg.optim),
        train_set,
        dist.rank_generator(cfg.run.seed, dist.rank()),
        device,
        amp=cfg.run.amp,
        scaler=torch.amp.GradScaler(device.type) if cfg.run.amp == "fp16" else None,
        task=task,
        ema=ema,
    )


def _restore(state: RunState, saved: dict[str, Any]) -> None:
    """Load a checkpoint into a fresh ``state``: weights (and their average), optimiser, scheduler, random states,
    step, time, the training-loss window since the last log row, and an evaluation a stop abandoned."""
    rank, world = dist.rank(), dist.world_size()
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"])
    state.scheduler.load_state_dict(saved["scheduler"])
    ckpt.set_rng_state(saved["rng"], state.generator, rank=rank)
    if state.scaler is not None and "scaler" in saved:
        state.scaler.load_state_dict(saved["scaler"])
    state.step, state.elapsed_before = int(saved["step"]), float(saved["elapsed_s"])
    windows = saved.get("windows")
    if windows and len(windows) == world:
        state.window[:] = list(windows[rank])
    elif windows and rank == 0:  # another number of processes: rank 0 carries the whole window
        state.window[:] = [sum(w[i] for w in windows) for i in range(3)] + [windows[0][3]]
    state.pending_eval = bool(saved.get("pending_eval")) and rank == 0


def _describe(state: RunState, in_shape: tuple[int, ...], world: int) -> str:
    """The line that opens a run: model, parameters, data, schedule, device."""
    cfg, o, (total, loc) = state.cfg, state.optim, parameter_counts(state.model)
    return (
        f"model {cfg.model.name}"
        + (f" ({cfg.model.transform})" if cfg.model.transform else "")
        + f": {total:,} parameters ({loc:,} in localisation); {state.task.describe(in_shape)}; "
        + f"{o.schedule} schedule: {o.optimizer} lr {o.lr:g} batch {o.batch_size} "
        + f"x {o.iterations:,} iterations; device {state.device}, {_threads()}"
        + (f"; {world} processes ({o.batch_size // world} images each)" if world > 1 else "")
        + ("" if cfg.run.amp == "off" else f"; amp {cfg.run.amp}")
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {_threads()})"


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread{'' if n == 1 else 's'}"
