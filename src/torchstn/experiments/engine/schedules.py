"""Named training schedules, and the optimiser / learning-rate scheduler they build.

A schedule is a preset of every :class:`~torchstn.experiments.engine.config.OptimConfig` field;
:func:`~torchstn.experiments.engine.config.resolve` fills the fields a
config leaves unset. Four are shipped (``docs/training.md`` explains each choice):

* ``paper``: the paper's protocol (§4.1): SGD, batch 256, lr 0.01 x0.1 every 50k iterations, 150k iterations, no
  weight decay. The paper says "SGD" and no more; we read it as **plain SGD (momentum 0)**: set
  ``optim.momentum=0.9`` for the common alternative.
* ``cpu``: a short schedule for a 2-core CPU (20-35 minutes per CNN-sized Table 1 cell; ST-CNN on RTS: 0.87% in
  23 min on one thread): Adam, batch 128, lr 2e-3, linear warm-up then cosine decay to zero over 4k iterations
  (512k images, 8.5 epochs), localisation nets at the same lr (measured on RTS with Adam over 1,500 iterations:
  1.96% test error with x1 against 2.74% with x0.1).
* ``cpu_long``: the ``cpu`` recipe stretched four times (16k iterations, 2.05M images, 34 epochs, warm-up 800): the
  Table 1 conv cells' longer CPU run (issue 17; about 30 min per ST-CNN cell on one thread with bf16).
* ``demo``: the README demo: the ``cpu`` recipe on the clock (``clock="time"``: warm-up and decay spread over
  ``run.time_limit`` minutes, however busy the machine is).

Example:
    >>> import types
    >>> f = lr_factor_fn(types.SimpleNamespace(**SCHEDULES.get("paper")))
    >>> f(0), f(49_999), f(50_000), f(100_000)
    (1.0, 1.0, 0.1, 0.010000000000000002)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from torchstn._registry import Registry
from torchstn.errors import ConfigError
from torchstn.nn import param_groups

__all__ = [
    "SCHEDULES",
    "OPTIMIZERS",
    "DECAYS",
    "CLOCKS",
    "ResolvedOptim",
    "lr_factor_fn",
    "build_optimizer",
    "build_scheduler",
    "sgd_step_preset",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
DECAYS = ("constant", "step", "cosine", "linear")
CLOCKS = ("steps", "time")


def sgd_step_preset(
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    iterations: int,
    lr_steps: tuple[int, ...],
    gamma: float = 0.1,
    loc_lr_mult: float = 1.0,
) -> dict:
    """A preset of the paper's kind of schedule, which every experiment's own schedule also is: SGD, the lr times
    ``gamma`` at each of ``lr_steps``, no warm-up, identity regulariser or clipping, on the step clock.

    Example:
        >>> p = sgd_step_preset(lr=0.3, momentum=0.9, weight_decay=0.0, batch_size=100, iterations=200, lr_steps=(100,))
        >>> p["optimizer"], p["decay"], p["clock"], p["warmup"]
        ('sgd', 'step', 'steps', 0)
    """
    return dict(
        optimizer="sgd",
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        iterations=iterations,
        decay="step",
        lr_steps=tuple(lr_steps),
        gamma=gamma,
        warmup=0,
        loc_lr_mult=loc_lr_mult,
        identity_weight=0.0,
        grad_clip=0.0,
        clock="steps",
    )


_PAPER = sgd_step_preset(
    lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=256, iterations=150_000, lr_steps=(50_000, 100_000)
)
_CPU = dict(
    optimizer="adam",
    lr=2e-3,
    momentum=0.9,
    weight_decay=0.0,
    batch_size=128,
    iterations=4_000,
    decay="cosine",
    lr_steps=(),
    gamma=0.1,
    warmup=200,
    loc_lr_mult=1.0,
    identity_weight=0.0,
    grad_clip=0.0,
    clock="steps",
)
_DEMO = dict(_CPU, iterations=1_500, warmup=75, clock="time")
_CPU_LONG = dict(_CPU, iterations=16_000, warmup=800)

#: Named presets of every optimiser field; an experiment adds its own with ``SCHEDULES.register(name, preset)``.
SCHEDULES: Registry[dict] = Registry("optim.schedule", error=ConfigError)
for _name, _preset in {"paper": _PAPER, "cpu": _CPU, "cpu_long": _CPU_LONG, "demo": _DEMO}.items():
    SCHEDULES.register(_name, _preset)


@dataclasses.dataclass(frozen=True)
class ResolvedOptim:
    """The optimiser fields of a resolved config, every one set: what the engine reads (as ``RunState.optim``).

    A config's ``optim`` section stays an :class:`~torchstn.experiments.engine.config.OptimConfig` whose fields may be
    ``None`` until :func:`~torchstn.experiments.engine.config.resolve` fills them from the schedule (so what a run
    saves, compares and prints is the config itself); :meth:`of` then takes its values once, checked, with the types
    a schedule gives them. The fields are those of ``OptimConfig``, in its order.

    Example:
        >>> from torchstn.experiments.engine.config import TrainConfig, resolve
        >>> o = ResolvedOptim.of(resolve(TrainConfig()).optim)
        >>> o.optimizer, o.batch_size, o.iterations
        ('adam', 128, 4000)
        >>> ResolvedOptim.of(TrainConfig().optim)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchstn.errors.ConfigError: optim.optimizer, optim.lr, ... unset: resolve the config first ...
    """

    schedule: str
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    iterations: int
    decay: str
    lr_steps: tuple[int, ...]
    gamma: float
    warmup: int
    loc_lr_mult: float
    identity_weight: float
    grad_clip: float
    clock: str
    ema: float

    @classmethod
    def of(cls, optim: object) -> ResolvedOptim:
        """The values of ``optim`` (the ``optim`` section of a resolved config), checked to be set.

        Raises:
            ConfigError: a field is ``None``: the config was not resolved.
        """
        values = {f.name: getattr(optim, f.name) for f in dataclasses.fields(cls)}
        unset = [f"optim.{k}" for k, v in values.items() if v is None]
        if unset:
            raise ConfigError(
                f"{', '.join(unset)} unset: resolve the config first "
                "(torchstn.experiments.engine.config.resolve fills them from its schedule)"
            )
        return cls(**values)


def lr_factor_fn(optim) -> Callable[[float], float]:
    """The learning-rate multiplier as a function of the iteration: warm-up times decay.

    Warm-up rises linearly from 0.1 to 1 over ``warmup`` iterations; ``cosine`` and ``linear`` decay to zero at
    ``iterations`` (measured after the warm-up); ``step`` multiplies by ``gamma`` at each of ``lr_steps``.
    """
    decay, total, warmup = optim.decay, int(optim.iterations), int(optim.warmup)
    steps, gamma = tuple(optim.lr_steps or ()), float(optim.gamma)

    def factor(step: float) -> float:
        if decay == "step":
            f = gamma ** sum(step >= s for s in steps)
        elif decay in ("cosine", "linear"):
            t = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
            f = 0.5 * (1.0 + math.cos(math.pi * t)) if decay == "cosine" else 1.0 - t
        else:
            f = 1.0
        if warmup > 0 and step < warmup:
            f *= 0.1 + 0.9 * step / warmup
        return f

    return factor


def build_optimizer(model: nn.Module, optim, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """The optimiser of a resolved ``optim`` config over ``groups`` (default: the localisation nets at
    ``lr * loc_lr_mult``, the rest at ``lr``, all with ``weight_decay``)."""
    if groups is None:
        groups = param_groups(model, optim.lr, optim.loc_lr_mult, weight_decay=optim.weight_decay)
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)
    if optim.optimizer == "adam":
        return torch.optim.Adam(groups, lr=optim.lr)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr)
    raise ConfigError(f"optim.optimizer must be one of {list(OPTIMIZERS)}, got {optim.optimizer!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, optim) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler (call ``step()`` after every optimiser step) following :func:`lr_factor_fn`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(optim))
