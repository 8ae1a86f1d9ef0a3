"""Training configuration: small frozen dataclasses, checked when built (TOML files and ``--set`` overrides are in
:mod:`torchstn.experiments.engine.config_io`).

A config has four sections, each a frozen dataclass: ``[model]`` (:class:`ModelConfig`), ``[data]``
(:class:`DataConfig`), ``[optim]`` (:class:`OptimConfig`) and ``[run]`` (:class:`RunConfig`). Optimiser fields left
unset (``None``) are filled from the named schedule (``paper``, ``cpu``, ``demo``; see
:mod:`torchstn.experiments.engine.schedules`) by :func:`resolve`, and the resolved config is what every run saves (as
``config.toml`` beside its checkpoints and as a plain dict inside each checkpoint), so a saved config reproduces the
run on its own.

Unknown sections or keys and values of the wrong type raise :class:`~torchstn.errors.ConfigError` naming the key and
what is accepted. Nothing is ``exec``-ed: TOML holds values only.

Example:
    >>> cfg = from_dict({"model": {"name": "st_cnn", "transform": "affine"}, "data": {"variant": "RTS"}})
    >>> cfg.model.transform, cfg.optim.schedule
    ('affine', 'cpu')
    >>> from_dict({"optim": {"lr": "fast"}})
    Traceback (most recent call last):
    ...
    torchstn.errors.ConfigError: optim.lr must be float or none, got 'fast' (str)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from torchstn._checks import did_you_mean
from torchstn.errors import ConfigError
from torchstn.experiments.engine.fields import coerce, fields_of, unknown_key
from torchstn.experiments.engine.schedules import CLOCKS, DECAYS, OPTIMIZERS, SCHEDULES
from torchstn.experiments.engine.tasks import TASKS, TaskConfig, task_from_dict, task_to_dict

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "VARIANTS",
    "from_dict",
    "to_dict",
    "SECTIONS",
    "parse_device",
    "config_problems",
    "problems_error",
    "check_values",
    "resolve",
    "all_keys",
]

VARIANTS = ("R", "RTS", "P", "E", "TC", "plain", "addition", "3D")
DEVICES = ("cpu", "cuda")
AMP_MODES = ("off", "bf16", "fp16")


@dataclass(frozen=True)
class ModelConfig:
    """The network (see :func:`torchstn.models.build_model`).

    Attributes:
        name: registered model name (``fcn``, ``cnn``, ``st_fcn``, ``st_cnn``, ``st_fcn_2x``, ``tutorial_stn``).
        transform: transform family of the spatial transformer(s) (``affine``, ``projective``, ``tps``, ...);
            ``None`` for the model's default (plain nets have none).
        st_pool: average-pool the transformer's output x2 before the classifier (paper: RTS and TC).
        bound: keep every transform parameter within ``bound`` of the identity (tanh); ``None`` for unbounded.
        channels: the CNN's two conv widths; ``None`` fits them to the experiment's parameter budget.
        hidden: the FCN's two hidden widths; ``None`` fits them to the budget.
    """

    name: str = "st_cnn"
    transform: str | None = None
    st_pool: bool = False
    bound: float | None = None
    channels: tuple[int, ...] | None = None
    hidden: tuple[int, ...] | None = None


@dataclass(frozen=True)
class DataConfig:
    """The data: a distorted-MNIST variant, an appendix experiment's data, or tensor files of your own.

    Attributes:
        variant: ``R``, ``RTS``, ``P``, ``E``, ``TC`` or ``plain`` (paper §4.1); ``addition`` (two RTS digits, one
            per channel, labelled with their sum, 19 classes; Appendix A.1) or ``3D`` (a digit extruded into a
            ``60^3`` volume, Appendix A.3).
        root: directory with the MNIST IDX files; ``None`` uses ``$TORCHSTN_DATA`` / the cache / the registry.
        synthetic: use this many synthetic seven-segment digits (and a sixth as many for testing) instead of MNIST:
            offline smoke runs and tests, not MNIST results (0 = MNIST).
        train_file: train on this tensor file (:class:`torchstn.data.TensorFile`) instead of ``variant``.
        test_file: evaluate on this tensor file instead of the variant's fixed test set.
    """

    variant: str = "RTS"
    root: str | None = None
    synthetic: int = 0
    train_file: str | None = None
    test_file: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule. ``None`` fields come from the named ``schedule``.

    Attributes:
        schedule: ``paper``, ``cpu`` or ``demo`` (see :mod:`torchstn.experiments.engine.schedules`).
        optimizer: ``sgd`` or ``adam``.
        lr: base learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 weight decay.
        batch_size: images per iteration.
        iterations: optimiser steps.
        decay: ``step`` (x ``gamma`` at each of ``lr_steps``), ``cosine``, ``onecycle`` or ``constant``.
        lr_steps: iterations at which ``step`` decay multiplies the lr by ``gamma``.
        gamma: the ``step`` decay factor.
        warmup: iterations of linear warm-up from ``lr / 10`` (added before any decay).
        loc_lr_mult: learning-rate multiplier of every localisation net and regression head.
        identity_weight: weight of the identity regulariser (0 = off).
        grad_clip: clip the gradient norm to this value; 0 = off.
        clock: ``steps`` (the schedule runs over ``iterations``) or ``time`` (it runs over ``run.time_limit``
            minutes of wall time, ``iterations`` only setting its scale: warm-up and step positions are read as
            fractions of it; training ends when the time is up). ``time`` adapts to a busy machine but is not
            reproducible iteration for iteration.
    """

    schedule: str = "cpu"
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    iterations: int | None = None
    decay: str | None = None
    lr_steps: tuple[int, ...] | None = None
    gamma: float | None = None
    warmup: int | None = None
    loc_lr_mult: float | None = None
    identity_weight: float | None = None
    grad_clip: float | None = None
    clock: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """How to run: seed, device, logging and checkpoint cadence, time budget.

    Attributes:
        seed: seeds the model initialisation, the batch order and the training distortions.
        device: ``cpu`` or ``cuda`` (``cuda:N`` for one GPU).
        threads: CPU threads for torch (``torch.set_num_threads``); ``None`` keeps torch's default.
        deterministic: ask torch for deterministic algorithms (needed for bitwise resume on GPU).
        eval_every: evaluate on the test set every this many iterations (0 = only at the end).
        eval_limit: periodic evaluations use the first ``eval_limit`` test images (0 = all); the final one uses all.
        eval_batch_size: batch size of evaluation.
        log_every: log training loss, error, throughput and theta statistics every this many iterations.
        checkpoint_every: save ``last.pt`` every this many iterations (0 = only at evaluations and the end).
        time_limit: stop training after this many minutes (the run is still checkpointed and evaluated).
        out: output directory; ``None`` gives ``runs/<config name>``.
        amp: mixed precision of the forward pass and the loss: ``off``, ``bf16`` (CPU or a GPU that supports it) or
            ``fp16`` (CUDA only, with a gradient scaler); see :mod:`torchstn.experiments.engine.trainer`.
        dist_timeout: under ``torchrun``, minutes a process waits at a collective (for a peer that hangs or died)
            before the job fails; see :mod:`torchstn.experiments.engine.distributed`.
    """

    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    deterministic: bool = False
    eval_every: int = 0
    eval_limit: int = 0
    eval_batch_size: int = 500
    log_every: int = 50
    checkpoint_every: int = 1000
    time_limit: float | None = None
    out: str | None = None
    amp: str = "off"
    dist_timeout: float = 30.0


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: ``model``, ``data``, ``optim`` and ``run`` sections, and the ``task`` that says how the
    engine trains it (:mod:`torchstn.experiments.engine.tasks`; default ``classify``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    task: TaskConfig = field(default_factory=TaskConfig)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


def all_keys() -> list[str]:
    """Every ``section.key`` of the fixed sections (the task's options depend on the task: :func:`task_keys`)."""
    return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in fields_of(cls)] + ["task.name"]


def _value_problems(cfg: TrainConfig) -> list[tuple[str, str]]:
    """Range and choice checks that do not need the model or data registries: ``[(key, message), ...]``."""
    from torchstn.transforms import list_transforms

    problems: list[tuple[str, str]] = []

    def choice(key: str, value: str | None, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if value is not None and value not in allowed:
            problems.append(
                (key, f"{key} must be one of {list(allowed)}, got {value!r}.{did_you_mean(value, allowed)}")
            )

    def positive(key: str, value: float | None, allow_zero: bool = False) -> None:
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            problems.append((key, f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}"))

    choice("model.transform", cfg.model.transform, list_transforms())
    task = TASKS.get(cfg.task.name)
    choice("data.variant", cfg.data.variant, task.variants or VARIANTS)
    choice("optim.schedule", cfg.optim.schedule, SCHEDULES)
    choice("optim.optimizer", cfg.optim.optimizer, OPTIMIZERS)
    choice("optim.decay", cfg.optim.decay, DECAYS)
    choice("optim.clock", cfg.optim.clock, CLOCKS)
    choice("run.amp", cfg.run.amp, AMP_MODES)
    if cfg.optim.clock == "time" and cfg.run.time_limit is None:
        problems.append(
            ("optim.clock", "optim.clock = 'time' needs run.time_limit (minutes), e.g. --set run.time_limit=4")
        )
    if not _is_device_name(cfg.run.device):
        problems.append(
            ("run.device", f"run.device must be one of {list(DEVICES)} or 'cuda:N', got {cfg.run.device!r}")
        )
    o, r = cfg.optim, cfg.run
    for key, value in [
        ("optim.lr", o.lr),
        ("optim.batch_size", o.batch_size),
        ("optim.iterations", o.iterations),
        ("optim.gamma", o.gamma),
        ("optim.loc_lr_mult", o.loc_lr_mult),
        ("model.bound", cfg.model.bound),
        ("run.threads", r.threads),
        ("run.eval_batch_size", r.eval_batch_size),
        ("run.log_every", r.log_every),
        ("run.time_limit", r.time_limit),
        ("run.dist_timeout", r.dist_timeout),
    ]:
        positive(key, value)
    for key, value in [
        ("optim.momentum", o.momentum),
        ("optim.weight_decay", o.weight_decay),
        ("optim.warmup", o.warmup),
        ("optim.identity_weight", o.identity_weight),
        ("optim.grad_clip", o.grad_clip),
        ("run.eval_every", r.eval_every),
        ("run.eval_limit", r.eval_limit),
        ("run.checkpoint_every", r.checkpoint_every),
        ("data.synthetic", cfg.data.synthetic),
    ]:
        positive(key, value, allow_zero=True)
    if o.warmup is not None and o.iterations is not None and o.warmup >= o.iterations:
        problems.append(("optim.warmup", f"optim.warmup ({o.warmup}) must be below optim.iterations ({o.iterations})"))
    if o.lr_steps is not None and (list(o.lr_steps) != sorted(o.lr_steps) or any(s <= 0 for s in o.lr_steps)):
        problems.append(
            ("optim.lr_steps", f"optim.lr_steps must be increasing positive iterations, got {list(o.lr_steps)}")
        )
    elif o.lr_steps is not None and o.iterations is not None and any(s >= o.iterations for s in o.lr_steps):
        problems.append(
            ("optim.lr_steps", f"optim.lr_steps {list(o.lr_steps)} must lie below optim.iterations = {o.iterations}")
        )
    return problems


def check_values(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` if its values pass :func:`_value_problems`, else a ConfigError naming every problem."""
    problems = _value_problems(cfg)
    if problems:
        raise problems_error([message for _, message in problems])
    return cfg


def _is_device_name(name: str) -> bool:
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
    if not isinstance(name, str) or not _is_device_name(name):
        raise ConfigError(f"{key} must be one of {list(DEVICES)} or 'cuda:N', got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key} {name} but CUDA is not available to this torch ({torch.__version__}); use cpu")
    return torch.device(name)


def config_problems(data: Mapping[str, Any]) -> tuple[TrainConfig, list[tuple[str, str]]]:
    """Every problem of a config given as nested plain data, not just the first, so one run of a command reports
    them all.

    Returns:
        ``(config, problems)``: the config with each bad field left at its default, and ``(key, message)`` for each
        problem (``key`` is ``section.name``, or the section for a whole-section problem) in the order found.

    Example:
        >>> _, problems = config_problems({"optim": {"lr": "fast", "iterations": -5}})
        >>> [key for key, _ in problems]
        ['optim.lr', 'optim.iterations']
    """
    if not isinstance(data, Mapping):
        return TrainConfig(), [("", f"a config must be a table of sections, got {type(data).__name__}")]
    problems: list[tuple[str, str]] = []
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name == "task" and isinstance(values, Mapping):
            sections["task"], task_problems = task_from_dict(values)
            problems += task_problems
            continue
        if name not in SECTIONS:
            owner = next((s for s, cls in SECTIONS.items() if name in fields_of(cls)), None)
            if not isinstance(values, Mapping) and owner is not None:
                problems.append((name, f"key {name!r} belongs in the [{owner}] section"))
            else:
                problems.append((name, str(unknown_key(name, [*SECTIONS, "task"]))))
            continue
        if not isinstance(values, Mapping):
            problems.append((name, f"[{name}] must be a table of keys, got {values!r}"))
            continue
        types_ = fields_of(SECTIONS[name])
        kwargs = {}
        for key, value in values.items():
            if key not in types_:
                problems.append((f"{name}.{key}", str(unknown_key(f"{name}.{key}", [f"{name}.{k}" for k in types_]))))
                continue
            try:
                kwargs[key] = coerce(f"{name}.{key}", value, types_[key])
            except ConfigError as e:
                problems.append((f"{name}.{key}", str(e)))
        sections[name] = SECTIONS[name](**kwargs)
    cfg = TrainConfig(**sections)
    return cfg, problems + _value_problems(cfg)


def problems_error(messages: list[str]) -> ConfigError:
    """One :class:`~torchstn.errors.ConfigError` for one or several problem messages (one line each)."""
    if len(messages) == 1:
        return ConfigError(messages[0])
    return ConfigError(f"{len(messages)} problems in the config:\n  " + "\n  ".join(messages))


def from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build and check a :class:`TrainConfig` from nested plain data (a parsed TOML file or a checkpoint's dict).

    Raises:
        ConfigError: an unknown section or key, a value of the wrong type or out of range (every problem, one line
            each).
    """
    cfg, problems = config_problems(data)
    if problems:
        raise problems_error([message for _, message in problems])
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict (tuples become lists) of ``cfg``; :func:`from_dict` inverts it."""
    out = {}
    for name in SECTIONS:
        section = getattr(cfg, name)
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}
    out["task"] = task_to_dict(cfg.task)
    return out


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill every unset (``None``) optimiser field of ``cfg`` from its named schedule
    (:data:`~torchstn.experiments.engine.schedules.SCHEDULES`) and check the result: the config a run saves.

    Returns:
        A new config in which every ``optim`` field is set; when ``optim.iterations`` is given, the preset's warm-up
        and ``step`` positions keep their fractions of the schedule.

    Raises:
        ConfigError: an unknown schedule, or a combination that does not fit (e.g. ``lr_steps`` past the end).

    Example:
        >>> cfg = resolve(TrainConfig())
        >>> cfg.optim.optimizer, cfg.optim.batch_size, cfg.optim.decay
        ('adam', 128, 'cosine')
    """
    preset = SCHEDULES.get(cfg.optim.schedule)
    filled = {k: (preset[k] if getattr(cfg.optim, k) is None else getattr(cfg.optim, k)) for k in preset}
    optim = dataclasses.replace(cfg.optim, **filled)
    if cfg.optim.iterations is not None:  # iterations changed: the preset's warm-up and steps keep their fractions
        scale = optim.iterations / preset["iterations"]
        if cfg.optim.warmup is None:
            optim = dataclasses.replace(optim, warmup=round(preset["warmup"] * scale))
        if optim.decay == "step" and cfg.optim.lr_steps is None:
            optim = dataclasses.replace(optim, lr_steps=tuple(max(1, round(s * scale)) for s in preset["lr_steps"]))
    return check_values(dataclasses.replace(cfg, optim=optim))
