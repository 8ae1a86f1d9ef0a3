"""Configs as files and command-line overrides: TOML in (``tomllib``, or ``tomli`` on Python 3.10), TOML out, and
``--set key=value``.

Example:
    >>> from torchstn.experiments.engine.config import TrainConfig
    >>> cfg = apply_overrides(TrainConfig(), ["optim.lr=0.02", "seed=3", "model.transform=tps"])
    >>> cfg.optim.lr, cfg.run.seed, cfg.model.transform
    (0.02, 3, 'tps')
    >>> apply_overrides(cfg, ["optim.lrr=0.1"])
    Traceback (most recent call last):
    ...
    torchstn.errors.ConfigError: --set optim.lrr=0.1: unknown key 'optim.lrr'. Did you mean 'optim.lr'? ...
"""

from __future__ import annotations

import os
import typing
import warnings
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from torchstn._checks import closest
from torchstn._registry import Registry
from torchstn.errors import ConfigError
from torchstn.experiments.engine.config import (
    SECTIONS,
    TrainConfig,
    all_keys,
    config_problems,
    problems_error,
    to_dict,
)
from torchstn.experiments.engine.fields import fields_of, unknown_key
from torchstn.experiments.engine.tasks import DEFAULT_TASK, TASKS, task_keys

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml
    except ModuleNotFoundError:
        _toml = None

__all__ = ["load_config", "apply_overrides", "to_toml", "packaged_configs", "config_name", "NAMED_CONFIGS"]

_NONE_WORDS = ("none", "null")

#: Configs known by name without a file: each name maps to a function returning the nested data a TOML file would
#: hold. The experiment specs (:mod:`torchstn.experiments.specs`) register their cells here
#: (``table1:RTS/st_cnn_affine``) with the metadata ``run_name`` (the default run directory's name) and, for an old
#: spelling, ``replaced_by``.
NAMED_CONFIGS: Registry = Registry("config", error=ConfigError, in_order=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def to_toml(cfg: TrainConfig, header: str = "") -> str:
    """The config as TOML text (``None`` fields are left out: every optional field defaults to ``None``)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, values in to_dict(cfg).items():
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines).lstrip("\n") + "\n"


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``0.1``, ``true``, ``[1, 2]``, ``"s"``), ``none``, or a bare string."""
    if text.strip().lower() in _NONE_WORDS:
        return None
    if _toml is not None:
        try:
            return _toml.loads(f"v = {text}")["v"]
        except Exception:  # not a TOML literal: a bare string such as affine or runs/x
            pass
    return text


def _resolve_key(key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if (section in SECTIONS and name in fields_of(SECTIONS[section])) or (section == "task" and name):
            return section, name  # a task option is checked against the task's options with the whole config
        raise unknown_key(key, all_keys())
    owners = [s for s, cls in SECTIONS.items() if key in fields_of(cls)]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"key {key!r} is ambiguous: write one of {[f'{s}.{key}' for s in owners]}")
    raise unknown_key(key, all_keys())


def _merge(data: dict[str, Any], overrides: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Write ``key=value`` overrides into the nested ``data`` in place; returns ``({section.name: override})`` (which
    override set each key, to blame it for a bad value) and the messages of the overrides that could not apply."""
    origin: dict[str, str] = {}
    problems: list[str] = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"--set {item}: an override must look like key=value, e.g. optim.lr=0.01")
            continue
        key, text = (s.strip() for s in item.split("=", 1))
        try:
            section, name = _resolve_key(key)
        except ConfigError as e:
            problems.append(f"--set {item}: {e}")
            continue
        tp = fields_of(SECTIONS[section])[name] if section != "task" else _task_option_type(data, name)
        value = _parse_value(text)
        if value is not None and str in (typing.get_args(tp) or (tp,)) and not isinstance(value, str):
            value = text  # a string field given something that parses as a number: keep the text
        if not isinstance(data.get(section, {}), dict):
            continue  # the file's section is not a table: reported with the file
        data.setdefault(section, {})[name] = value
        origin[f"{section}.{name}"] = item
    return origin, problems


def _task_option_type(data: dict[str, Any], name: str) -> Any:
    """The annotation of the option ``name`` of the task ``data`` names (``str`` for ``name`` itself and for what
    the task does not know: the whole config's check reports it)."""
    task = data.get("task", {}).get("name", DEFAULT_TASK) if isinstance(data.get("task"), dict) else DEFAULT_TASK
    if name == "name" or task not in TASKS:
        return str
    return task_keys(task).get(name, str)


def _merged_config(data: dict[str, Any], overrides: Iterable[str], where: str = "") -> TrainConfig:
    """``data`` with ``overrides`` applied, checked; every problem is blamed on its ``--set`` or on ``where``."""
    origin, problems = _merge(data, overrides)
    cfg, found = config_problems(data)
    prefix = f"{where}: " if where else ""
    problems += [f"--set {origin[key]}: {msg}" if key in origin else prefix + msg for key, msg in found]
    if problems:
        raise problems_error(problems)
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Return ``cfg`` with ``key=value`` overrides applied (``section.key`` or a key unique to one section).

    Values are TOML literals, parsed by the field's type; ``none`` sets an optional field to ``None``; text that is
    not a TOML literal is taken as a string (``model.transform=tps``).

    Raises:
        ConfigError: an override without ``=``, an unknown key, or a bad value; every problem, each naming its
            override (``--set optim.lr=fast: optim.lr must be float ...``).
    """
    return _merged_config(to_dict(cfg), overrides)


def packaged_configs() -> dict[str, Path]:
    """Configs shipped with torchstn: ``{name: path}`` (``torchstn train NAME`` accepts the name)."""
    root = resources.files("torchstn.experiments") / "configs"
    if not root.is_dir():
        return {}
    return {
        Path(p.name).stem: Path(str(p))
        for p in sorted(root.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".toml")
    }


def load_config(source: str | os.PathLike[str], overrides: Iterable[str] = ()) -> TrainConfig:
    """Load a config from a TOML file (or a config's name) and apply ``overrides``.

    Args:
        source: a path to a ``.toml`` file, a name of :data:`NAMED_CONFIGS` such as ``table1:RTS/st_cnn_affine``
            (an old spelling warns with a DeprecationWarning naming the new one), or a packaged config name (``demo``).
        overrides: ``key=value`` strings (see :func:`apply_overrides`).

    Raises:
        ConfigError: the file is missing or not valid TOML, or it or an override holds an unknown key or a bad value:
            every problem, each blamed on the file or on its ``--set``. An override replaces the file's value before
            anything is checked, so ``--set`` can fix a bad value in the file.
    """
    path, name = Path(source), str(source)
    if not path.is_file() and name in NAMED_CONFIGS:
        replaced_by = NAMED_CONFIGS.info(name).get("replaced_by")
        if replaced_by:
            warnings.warn(f"config name {name!r} is deprecated: use {replaced_by!r}", DeprecationWarning, stacklevel=2)
        return _merged_config(NAMED_CONFIGS.get(name)(), overrides, where=name)
    if not path.is_file():
        shipped = packaged_configs()
        if str(source) in shipped:
            path = shipped[str(source)]
        else:
            current = {n: NAMED_CONFIGS.info(n).get("replaced_by") or n for n in NAMED_CONFIGS}  # old name -> new
            close = closest(name, [*current, *shipped])
            hint = f" Did you mean {current.get(close, close)!r}?" if close is not None else ""
            count = len(set(current.values())) + len(shipped)
            raise ConfigError(
                f"config {name!r} is neither a file nor a packaged config.{hint} "
                f"`torchstn train --list` shows the {count} config names"
            )
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError("reading TOML on Python 3.10 needs the tomli package: pip install tomli")
    try:
        with open(path, "rb") as f:
            data = _toml.load(f)
    except _toml.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    return _merged_config(data, overrides, where=str(path))


def config_name(source: str | os.PathLike[str]) -> str:
    """A short run name for a config source: the file stem, or a named config's ``run_name`` (``runs/<name>`` is the
    default output directory)."""
    if str(source) in NAMED_CONFIGS and not Path(source).is_file():
        return NAMED_CONFIGS.info(str(source)).get("run_name", str(source))
    return Path(str(source)).stem
