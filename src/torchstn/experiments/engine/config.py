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
from collections.abc import Mapping
from typing import Any

from torchstn.errors import ConfigError
from torchstn.experiments.engine.config_checks import check_values, parse_device, problems_error, value_problems
from torchstn.experiments.engine.config_sections import (
    AMP_MODES,
    DEVICES,
    MEMORY_FORMATS,
    SECTIONS,
    VARIANTS,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    all_keys,
)
from torchstn.experiments.engine.fields import coerce, fields_of, unknown_key
from torchstn.experiments.engine.schedules import SCHEDULES
from torchstn.experiments.engine.tasks import TASKS, task_from_dict, task_to_dict

# The sections (config_sections) and the checks (config_checks) are importable from here, as they always were.
__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "VARIANTS",
    "DEVICES",
    "AMP_MODES",
    "MEMORY_FORMATS",
    "from_dict",
    "to_dict",
    "SECTIONS",
    "parse_device",
    "config_problems",
    "problems_error",
    "check_values",
    "resolve",
    "resolve_run",
    "all_keys",
]


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
    variants = TASKS.get(cfg.task.name).variants if cfg.task.name in TASKS else ()
    given = data.get("data")
    if len(variants) == 1 and not (
        isinstance(given, Mapping) and "variant" in given
    ):  # a task with one dataset: data.variant need not be spelled out
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, variant=variants[0]))
    return cfg, problems + value_problems(cfg)


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
    return check_values(dataclasses.replace(cfg, optim=optim, run=resolve_run(cfg), data=resolve_data(cfg)))


def resolve_data(cfg: TrainConfig) -> DataConfig:
    """``cfg.data`` with an unset ``recipe`` and ``sigma`` named: the defaults of the variant's distortion when it
    takes them (``P``, ``E``), so that a saved run says which data it saw and a later change of a default is a
    config difference (a resume or a ``reproduce`` reuse refuses it) instead of a silent one. Other variants, and
    data read from tensor files, keep ``None``.

    Example:
        >>> d = resolve_data(TrainConfig(data=DataConfig(variant="E")))
        >>> d.recipe, d.sigma
        ('plain', 2.0)
        >>> resolve_data(TrainConfig(data=DataConfig(variant="RTS"))).recipe is None
        True
    """
    import inspect

    from torchstn.data.distortions import DISTORTIONS

    d = cfg.data
    if d.train_file or d.test_file or d.variant not in DISTORTIONS:  # an unknown variant is check_values' error
        return d
    takes = [k for k in ("recipe", "sigma") if k in inspect.signature(DISTORTIONS.get(d.variant)).parameters]
    if not takes or all(getattr(d, k) is not None for k in takes):
        return d
    given = {k: getattr(d, k) for k in takes if getattr(d, k) is not None}
    try:  # the defaults may depend on what is given (a recipe's own sigma): read them off the distortion
        options = DISTORTIONS.build(d.variant, **given).options()
    except (ValueError, TypeError):  # a bad recipe or sigma: build_datasets says so with the section's name
        return d
    defaults = {k: options[k] for k in takes if getattr(d, k) is None}
    return dataclasses.replace(d, **defaults)


def resolve_run(cfg: TrainConfig) -> RunConfig:
    """``cfg.run`` with ``amp = "auto"`` replaced by what it means on ``run.device`` of this machine: ``bf16`` on a
    CPU with native bfloat16 (:func:`torchstn.nn.native_bf16`) when the task's accuracy was checked with it
    (``Task.auto_bf16``), else ``off``. Other values are kept.

    Example:
        >>> resolve_run(TrainConfig(run=RunConfig(device="cuda", amp="auto"))).amp
        'off'
    """
    from torchstn.nn import native_bf16

    run = cfg.run
    if run.amp != "auto":
        return run
    task = TASKS.get(cfg.task.name) if cfg.task.name in TASKS else None  # an unknown task is check_values' error
    checked = task is not None and task.auto_bf16
    return dataclasses.replace(run, amp="bf16" if run.device == "cpu" and checked and native_bf16("cpu") else "off")
