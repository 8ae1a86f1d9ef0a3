"""The parts of the training loop: the model of a config, one optimisation step after another
(:func:`train_steps` on a :class:`RunState`), and :func:`evaluate`. :func:`torchstn.experiments.engine.trainer.fit` puts them
together with checkpoints, logs and resume.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchstn.errors import ConfigError, NonFiniteError, OptionError
from torchstn.experiments.engine import distributed as dist
from torchstn.experiments.engine.config import TrainConfig
from torchstn.experiments.engine.data import batch_indices
from torchstn.experiments.engine.evaluation import amp_autocast
from torchstn.experiments.engine.metrics import MetricsLogger, Progress
from torchstn.experiments.engine.schedules import ResolvedOptim, lr_factor_fn
from torchstn.experiments.engine.signals import StopRequest
from torchstn.nn import SpatialTransformer, identity_penalty, record_theta, theta_stats

__all__ = [
    "model_from_config",
    "parameter_counts",
    "RunState",
    "train_steps",
    "transformers",
    "theta_columns",
    "to_device",
]


def model_from_config(cfg: TrainConfig, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model of ``cfg.model`` for inputs ``in_shape (C, H, W)``, with lazy parameters materialised.

    Raises:
        ConfigError: an unknown model name, transform or option (the message names the ``model.`` key).
    """
    from torchstn import models

    m = cfg.model
    options: dict[str, Any] = {} if m.bound is None else {"st_options": {"bound": m.bound}}
    options.update({k: v for k, v in (("channels", m.channels), ("hidden", m.hidden)) if v is not None})
    try:
        model = models.build_model(
            m.name,
            in_shape=tuple(in_shape),
            num_classes=num_classes,
            transform=m.transform,
            st_pool=m.st_pool,
            **options,
        )
    except (OptionError, TypeError, ValueError) as e:
        raise ConfigError(f"[model] name={m.name!r} transform={m.transform!r}: {e}") from e
    was_training = model.training
    with torch.no_grad():  # materialise lazy layers before the optimiser sees the parameters
        model.eval()(torch.zeros(2, *in_shape))
    return model.train(was_training)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(total, localisation)`` trainable parameter counts (localisation = every spatial transformer's)."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loc_ids = {id(p) for m in model.modules() if isinstance(m, SpatialTransformer) for p in m.parameters()}
    loc = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) in loc_ids)
    return total, loc


def transformers(model: nn.Module) -> dict[str, SpatialTransformer]:
    """Every spatial transformer of ``model``, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SpatialTransformer)}


def theta_columns(names: list[str]) -> list[str]:
    """The ``metrics.csv`` columns of the theta statistics of the transformers ``names`` (unprefixed for one)."""
    keys = ("theta_mean", "theta_std", "theta_min", "theta_max")
    if len(names) == 1:
        return list(keys)
    return [f"{n}/{k}" for n in names for k in keys]


@dataclasses.dataclass
class RunState:
    """What a training loop carries between calls of :func:`train_steps`."""

    cfg: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_set: Any
    generator: torch.Generator
    device: torch.device
    step: int = 0
    elapsed_before: float = 0.0  # wall time of earlier sessions of this run (before a resume)
    session_start: float = dataclasses.field(default_factory=time.monotonic)
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    # since the last log row: summed loss, wrong predictions, images (this rank's), seconds spent in training steps
    window: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0, 0, 0.0])
    net: nn.Module | None = None  # what a step calls: ``model`` wrapped in DistributedDataParallel (None: ``model``)
    amp: str = "off"  # run.amp
    scaler: torch.amp.GradScaler | None = None  # with amp = "fp16"
    stop: StopRequest | None = None  # checked at every iteration boundary (all ranks agree under DDP)
    stopped_by: int | None = None  # the signal that stopped :func:`train_steps` at an iteration boundary
    pending_eval: bool = False  # a stop abandoned the evaluation due at ``step``: a resume runs it first
    task: Any = None  # the run's :class:`~torchstn.experiments.engine.tasks.Task`
    ema: torch.optim.swa_utils.AveragedModel | None = None  # optim.ema's average of ``model`` (rank 0 only)

    @property
    def optim(self) -> ResolvedOptim:
        """``cfg.optim`` with every field set and typed (``cfg`` is a resolved config).

        Raises:
            ConfigError: ``cfg`` was not resolved (:func:`~torchstn.experiments.engine.config.resolve`).
        """
        return ResolvedOptim.of(self.cfg.optim)

    def elapsed(self) -> float:
        """Wall time of this run so far, over all its sessions."""
        return self.elapsed_before + time.monotonic() - self.session_start


def train_steps(
    state: RunState,
    stop: int,
    *,
    logger: MetricsLogger | None = None,
    progress: Progress | None = None,
    time_limit_s: float | None = None,
) -> bool:
    """Train from ``state.step`` up to iteration ``stop`` (the torchvision ``train_one_epoch`` of an iteration-counted
    run). Logs every ``run.log_every`` iterations.

    A signal caught by ``state.stop`` (:class:`~torchstn.experiments.engine.signals.StopRequest`) stops it at the next iteration
    boundary, before the next batch is drawn, with ``state.stopped_by`` set: every state then is exactly that of an
    uninterrupted run after ``state.step`` iterations, so a checkpoint of it resumes bit for bit.

    Returns:
        ``False`` if it stopped because the run's wall time (:meth:`RunState.elapsed`) reached ``time_limit_s``,
        else ``True``. With ``optim.clock = "time"`` the learning-rate schedule follows that wall time too: its
        progress is ``elapsed / time_limit_s`` (the scheduler is not stepped), so it ends on time however fast the
        machine runs.

    Under DDP each rank trains on its share of the global batch (:func:`torchstn.experiments.engine.distributed.shard`); the
    logged loss and error are those of the global batch, theta statistics those of rank 0's share; the time limit
    and the time clock follow rank 0's clock, and a signal that reached any rank stops them all (every rank must stop
    at the same step; one small all-reduce per iteration).

    Raises:
        NonFiniteError: the loss became NaN or infinite.
    """
    cfg, model, device = state.cfg, state.model, state.device
    net = state.net or model
    o = state.optim
    bs = o.batch_size
    rank, world = dist.rank(), dist.world_size()
    shared_clock = world > 1 and (time_limit_s is not None or o.clock == "time")
    sts = transformers(model)
    identities = {name: _head_identity(st) for name, st in sts.items()} if o.identity_weight > 0 else {}
    n_train = len(state.train_set)
    model.train()
    win = state.window
    by_time = o.clock == "time"
    time_lr = _time_lr_factor(o, time_limit_s) if by_time else None
    while state.step < stop:
        if state.stop is not None:  # the iteration boundary: the one place a signal may stop the run
            signum = dist.all_reduce_max(state.stop.signum or 0, device) if world > 1 else state.stop.signum
            if signum:
                state.stopped_by = signum
                return True
        elapsed = state.elapsed()
        if shared_clock:  # one clock for all ranks: they must agree on the lr and on when to stop
            elapsed = dist.broadcast_float(elapsed, device)
        if time_limit_s is not None and elapsed >= time_limit_s:
            return False
        if time_lr is not None:  # by_time: the schedule follows the time budget
            f = time_lr(elapsed)
            for g in state.optimizer.param_groups:
                g["lr"] = g["initial_lr"] * f
        t_step = time.perf_counter()
        idx = dist.shard(batch_indices(state.step, bs, n_train, cfg.run.seed), rank, world)  # this rank's share
        loss_val, n_wrong, n_items, thetas = _iteration(state, o, net, idx, identities)
        win[0] += loss_val * n_items
        win[1] += n_wrong
        win[2] += n_items
        win[3] += time.perf_counter() - t_step
        row = None
        if state.step % cfg.run.log_every == 0 or state.step == o.iterations:
            row = _log_row(state, thetas)
            if logger is not None:
                logger.log(row)
        if progress is not None:  # loss and error from the first iteration on (the bar smooths them)
            live = {
                "loss": loss_val,
                "error": 100.0 * n_wrong / max(1, n_items),
                "lr": state.optimizer.param_groups[0]["lr"],
            }
            progress.update(state.step, row, live=live, elapsed=state.elapsed() if by_time else None)
    return True


def _iteration(
    state: RunState, o: ResolvedOptim, net: nn.Module, idx: torch.Tensor, identities: dict[str, torch.Tensor]
) -> tuple[float, int, int, dict[str, list[torch.Tensor]]]:
    """One optimisation step on the items ``idx`` (this rank's share of the batch of ``state.step``): the task's
    batch, curriculum, forward (under ``run.amp``, theta recorded), loss plus the identity penalty, backward and
    optimiser step; ``state.step`` advances.

    Returns:
        ``(loss, wrong items, items, thetas by transformer)`` of the batch.

    Raises:
        NonFiniteError: the loss became NaN or infinite.
    """
    model, device, task = state.model, state.device, state.task
    inputs, targets = task.batch(state.train_set, idx, state.generator)
    inputs, targets = to_device(inputs, device), to_device(targets, device)
    task.on_step(model, state.step)
    with record_theta(model, detach=o.identity_weight == 0) as thetas, amp_autocast(device, state.amp):
        outputs = task.forward(net, inputs)
    loss = task.loss(outputs, targets)
    total = loss
    if o.identity_weight > 0:
        penalty = sum(identity_penalty(t.float(), identities[name]) for name, ts in thetas.items() for t in ts)
        total = loss + o.identity_weight * penalty
    state.optimizer.zero_grad(set_to_none=True)
    _backward_step(state, total, o.grad_clip)
    if state.ema is not None:
        state.ema.update_parameters(model)
    if o.clock != "time":  # on the time clock train_steps sets the lr from the elapsed time instead
        state.scheduler.step()
    state.step += 1
    loss_val = float(loss.detach())
    if not math.isfinite(loss_val):
        raise NonFiniteError(
            f"the training loss became {loss_val} at iteration {state.step}: lower optim.lr or "
            "optim.loc_lr_mult, set model.bound or optim.identity_weight"
        )
    n_wrong, n_items = task.mistakes(outputs, targets)
    return loss_val, n_wrong, n_items, thetas


def _time_lr_factor(o: ResolvedOptim, time_limit_s: float | None) -> Callable[[float], float]:
    """The learning-rate factor of ``optim.clock = "time"`` as a function of the run's elapsed seconds: the
    schedule's virtual iteration is the fraction of the time budget used, times ``iterations``.

    Raises:
        ConfigError: no time budget (``time_limit_s``) to follow.
    """
    if time_limit_s is None:
        raise ConfigError("optim.clock = 'time' follows a time budget: set run.time_limit (time_limit_s)")
    factor = lr_factor_fn(o)
    return lambda elapsed: factor(elapsed / time_limit_s * o.iterations)


def _head_identity(st: SpatialTransformer) -> torch.Tensor:
    """The theta that ``optim.identity_weight`` pulls ``st``'s output towards: the ``identity`` buffer of its head
    (:class:`~torchstn.nn.ThetaHead`'s, or a custom head's own)."""
    identity = getattr(st.head, "identity", None)
    if not isinstance(identity, torch.Tensor):
        raise ConfigError(
            f"optim.identity_weight > 0 pulls theta towards its head's identity, but the head "
            f"{type(st.head).__name__} has no identity tensor (got {type(identity).__name__}); register one as a "
            "buffer or set optim.identity_weight = 0"
        )
    return identity


def to_device(x: Any, device: torch.device) -> Any:
    """``x`` (a tensor, or a tuple/list of tensors) on ``device``."""
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x.to(device, non_blocking=True)


def _log_row(state: RunState, thetas: dict[str, list[torch.Tensor]]) -> dict[str, Any]:
    """The metrics row of the iterations since the last one (the global batch's under DDP: a collective), which
    also starts the next window."""
    win = state.window
    loss_sum, wrong, n = dist.all_reduce_sum(win[:3], state.device)
    row: dict[str, Any] = {
        "step": state.step,
        "phase": "train",
        "loss": loss_sum / n,
        "error": 100.0 * wrong / n,
        "lr": state.optimizer.param_groups[0]["lr"],
        "img_per_s": n / max(win[3], 1e-9),
        "elapsed_s": state.elapsed(),
    }
    for name, ts in thetas.items():
        if ts:
            stats = theta_stats(torch.cat([t.detach() for t in ts]))
            prefix = "" if len(thetas) == 1 else f"{name}/"
            row.update({prefix + k: v for k, v in stats.items()})
    state.history.append({k: v for k, v in row.items() if k != "phase"})
    win[:] = [0.0, 0, 0, 0.0]
    return row


def _backward_step(state: RunState, total: torch.Tensor, clip: float) -> None:
    """Backward (DDP averages the gradients over the ranks here), optional clipping to the norm ``clip`` (0: none),
    the optimiser step; with a gradient scaler the loss is scaled and the gradients unscaled before clipping."""
    scaler = state.scaler
    (total if scaler is None else scaler.scale(total)).backward()
    if clip > 0:
        if scaler is not None:
            scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), clip)
    if scaler is None:
        state.optimizer.step()
    else:
        scaler.step(state.optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()
