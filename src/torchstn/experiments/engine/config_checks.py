"""The value checks of a training config (ranges, choices, combinations) and of a device name.

:func:`value_problems` lists every problem of a built :class:`~torchstn.experiments.engine.config.TrainConfig`, one
check per section; :mod:`torchstn.experiments.engine.config` runs it whenever a config is built or resolved.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from torchstn._checks import did_you_mean
from torchstn.errors import ConfigError
from torchstn.experiments.engine.config_sections import (
    AMP_MODES,
    DEVICES,
    MEMORY_FORMATS,
    VARIANTS,
    OptimConfig,
    TrainConfig,
)
from torchstn.experiments.engine.schedules import CLOCKS, DECAYS, OPTIMIZERS, SCHEDULES
from torchstn.experiments.engine.tasks import TASKS

__all__ = ["value_problems", "check_values", "problems_error", "parse_device", "is_device_name"]

Problems = list[tuple[str, str]]


def _choice(key: str, value: str | None, allowed: Iterable[str]) -> Problems:
    allowed = tuple(allowed)
    if value is not None and value not in allowed:
        return [(key, f"{key} must be one of {list(allowed)}, got {value!r}.{did_you_mean(value, allowed)}")]
    return []


def _positive(values: dict[str, float | None], allow_zero: bool = False) -> Problems:
    return [
        (key, f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
        for key, value in values.items()
        if value is not None and (value < 0 or (value == 0 and not allow_zero))
    ]


def _choice_problems(cfg: TrainConfig) -> Problems:
    """Each named choice (transform, variant, schedule parts, AMP mode) is one the registries know."""
    from torchstn.transforms import list_transforms

    o = cfg.optim
    return [
        *_choice("model.transform", cfg.model.transform, list_transforms()),
        *_choice("data.variant", cfg.data.variant, TASKS.get(cfg.task.name).variants or VARIANTS),
        *_choice("optim.schedule", o.schedule, SCHEDULES),
        *_choice("optim.optimizer", o.optimizer, OPTIMIZERS),
        *_choice("optim.decay", o.decay, DECAYS),
        *_choice("optim.clock", o.clock, CLOCKS),
        *_choice("run.amp", cfg.run.amp, AMP_MODES),
        *_choice("run.memory_format", cfg.run.memory_format, MEMORY_FORMATS),
    ]


def _run_setting_problems(cfg: TrainConfig) -> Problems:
    """A time clock has a time limit; the device is a device name."""
    problems: Problems = []
    if cfg.optim.clock == "time" and cfg.run.time_limit is None:
        problems.append(
            ("optim.clock", "optim.clock = 'time' needs run.time_limit (minutes), e.g. --set run.time_limit=4")
        )
    if not is_device_name(cfg.run.device):
        problems.append(
            ("run.device", f"run.device must be one of {list(DEVICES)} or 'cuda:N', got {cfg.run.device!r}")
        )
    return problems


def _range_problems(cfg: TrainConfig) -> Problems:
    """Sizes, rates and periods are positive (or at least zero where zero means "none")."""
    o, r = cfg.optim, cfg.run
    positive = {
        "optim.lr": o.lr,
        "optim.batch_size": o.batch_size,
        "optim.iterations": o.iterations,
        "optim.gamma": o.gamma,
        "optim.loc_lr_mult": o.loc_lr_mult,
        "model.bound": cfg.model.bound,
        "run.threads": r.threads,
        "run.eval_batch_size": r.eval_batch_size,
        "run.log_every": r.log_every,
        "run.time_limit": r.time_limit,
        "run.dist_timeout": r.dist_timeout,
    }
    at_least_zero = {
        "optim.momentum": o.momentum,
        "optim.weight_decay": o.weight_decay,
        "optim.warmup": o.warmup,
        "optim.identity_weight": o.identity_weight,
        "optim.grad_clip": o.grad_clip,
        "run.eval_every": r.eval_every,
        "run.eval_limit": r.eval_limit,
        "run.checkpoint_every": r.checkpoint_every,
        "data.synthetic": cfg.data.synthetic,
    }
    return _positive(positive) + _positive(at_least_zero, allow_zero=True)


def _schedule_problems(o: OptimConfig) -> Problems:
    """Warm-up and ``step`` positions lie inside the schedule."""
    problems: Problems = []
    if o.warmup is not None and o.iterations is not None and o.warmup >= o.iterations:
        problems.append(("optim.warmup", f"optim.warmup ({o.warmup}) must be below optim.iterations ({o.iterations})"))
    if not 0.0 <= o.ema < 1.0:
        problems.append(
            ("optim.ema", f"optim.ema is a decay in [0, 1) (0 = no weight average, e.g. 0.999), got {o.ema!r}")
        )
    if o.lr_steps is not None and (list(o.lr_steps) != sorted(o.lr_steps) or any(s <= 0 for s in o.lr_steps)):
        problems.append(
            ("optim.lr_steps", f"optim.lr_steps must be increasing positive iterations, got {list(o.lr_steps)}")
        )
    elif o.lr_steps is not None and o.iterations is not None and any(s >= o.iterations for s in o.lr_steps):
        problems.append(
            ("optim.lr_steps", f"optim.lr_steps {list(o.lr_steps)} must lie below optim.iterations = {o.iterations}")
        )
    return problems


def value_problems(cfg: TrainConfig) -> Problems:
    """Range and choice checks that do not need the model or data registries: ``[(key, message), ...]``.

    Example:
        >>> from torchstn.experiments.engine.config_sections import RunConfig
        >>> value_problems(TrainConfig(run=RunConfig(threads=0)))
        [('run.threads', 'run.threads must be > 0, got 0')]
    """
    return _choice_problems(cfg) + _run_setting_problems(cfg) + _range_problems(cfg) + _schedule_problems(cfg.optim)


def check_values(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` if its values pass :func:`value_problems`, else a ConfigError naming every problem."""
    problems = value_problems(cfg)
    if problems:
        raise problems_error([message for _, message in problems])
    return cfg


def problems_error(messages: list[str]) -> ConfigError:
    """One :class:`~torchstn.errors.ConfigError` for one or several problem messages (one line each)."""
    if len(messages) == 1:
        return ConfigError(messages[0])
    return ConfigError(f"{len(messages)} problems in the config:\n  " + "\n  ".join(messages))


def is_device_name(name: str) -> bool:
    """Whether ``name`` is ``cpu``, ``cuda`` or ``cuda:N`` (usable here or not)."""
    return name in DEVICES or (name.startswith("cuda:") and name[5:].isdigit())


def parse_device(name: str, key: str = "--device") -> torch.device:
    """The device ``name`` names (``cpu``, ``cuda`` or ``cuda:N``), checked to be usable here.

    Args:
        name: the device string, as in ``run.device``.
        key: how to name the setting in the error (``--device``, ``run.device``).

    Raises:
        ConfigError: an unknown device name, or a CUDA device where torch has no CUDA.

    Example:
        >>> parse_device("cpu")
        device(type='cpu')
        >>> parse_device("gpu")
        Traceback (most recent call last):
        ...
        torchstn.errors.ConfigError: --device must be one of ['cpu', 'cuda'] or 'cuda:N', got 'gpu'
    """
    if not isinstance(name, str) or not is_device_name(name):
        raise ConfigError(f"{key} must be one of {list(DEVICES)} or 'cuda:N', got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key} {name} but CUDA is not available to this torch ({torch.__version__}); use cpu")
    return torch.device(name)
