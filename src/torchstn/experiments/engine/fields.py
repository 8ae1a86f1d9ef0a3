"""Typed fields of the config dataclasses: the field types of a section, and the check of one value against its
annotation. One place for the rules that every section (and every task's options) follows.

Example:
    >>> coerce("optim.lr", 1, float | None), coerce("optim.lr_steps", [10, 20], tuple[int, ...] | None)
    (1.0, (10, 20))
    >>> coerce("run.seed", True, int)
    Traceback (most recent call last):
    ...
    torchstn.errors.ConfigError: run.seed must be int, got True (bool)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any, Union

from torchstn._checks import did_you_mean
from torchstn.errors import ConfigError

__all__ = ["fields_of", "coerce", "unknown_key", "type_name"]


def fields_of(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def unknown_key(key: str, accepted: Iterable[str]) -> ConfigError:
    """The error for an unknown config key, with the nearest accepted one."""
    accepted = list(accepted)
    return ConfigError(f"unknown key {key!r}.{did_you_mean(key, accepted)} Accepted keys: {', '.join(accepted)}")


def type_name(tp: Any) -> str:
    """How messages name the annotation ``tp`` (``float or none``, ``a list of ints``)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of ints"
    return "none" if tp is type(None) else tp.__name__


def coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (int -> float is allowed; bool is never a number; a list
    becomes a tuple of ints).

    Raises:
        ConfigError: the value does not fit, naming ``key``, the expected type and what arrived.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError:
                pass
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(coerce(key, v, int) for v in value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} must be {type_name(tp)}, got {value!r} ({type(value).__name__})")
