"""Validation helpers shared by every public entry point (one place, one message style)."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import numbers
from collections.abc import Callable, Iterable, Sequence

import torch

from torchstn.errors import DTypeError, NonFiniteError, OptionError, ShapeError


def look_up_option(name: str, value: object, allowed: Iterable[str], *, error: type[Exception] = OptionError) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise raise ``error`` (:class:`OptionError`; the harness
    passes :class:`~torchstn.errors.ConfigError`) with a suggestion.

    Example:
        >>> look_up_option("mode", "bilnear", ["bilinear", "nearest"])
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: mode must be one of ['bilinear', 'nearest'], got 'bilnear'. Did you mean 'bilinear'?
    """
    allowed = tuple(allowed)
    if isinstance(value, str) and value in allowed:
        return value
    raise error(f"{name} must be one of {list(allowed)}, got {value!r}.{did_you_mean(value, allowed)}")


def keyword_options(fn: Callable, exclude: Iterable[str] = ("self",)) -> tuple[str, ...]:
    """The named keyword arguments of ``fn`` (a function or a class's ``__init__``), without ``*args``/``**kwargs``.

    Example:
        >>> def build(in_shape, num_classes=10, *args, width=8, **kwargs): ...
        >>> keyword_options(build, exclude=("in_shape",))
        ('num_classes', 'width')
        >>> keyword_options(object.__init__)
        ()
    """
    if fn is object.__init__:  # a class without its own __init__: (self, /, *args, **kwargs)
        return ()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind in kinds and p.name not in tuple(exclude))


def check_keywords(
    owner: str, given: Iterable[str], allowed: Iterable[str], *, error: type[Exception] = OptionError
) -> None:
    """Refuse keyword names ``given`` to ``owner`` that are not in ``allowed``, suggesting the nearest allowed one.

    Example:
        >>> check_keywords("SpatialTransformer", ["paddingmode"], ["mode", "padding_mode"])
        Traceback (most recent call last):
        ...
        torchstn.errors.OptionError: unknown keyword 'paddingmode' for SpatialTransformer. Did you mean 'padding_mode'?
    """
    allowed = tuple(allowed)
    unknown = [k for k in given if k not in allowed]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        names = ", ".join(repr(k) for k in unknown)
        raise error(f"unknown keyword{plural} {names} for {owner}.{did_you_mean(unknown[0], allowed)}")


def did_you_mean(value: object, allowed: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the allowed name nearest ``value`` (:func:`closest`), else ``''``: the one
    suggestion helper of the package.

    Example:
        >>> did_you_mean("RTs", ["R", "RTS"]), did_you_mean("zzz", ["R", "RTS"])
        (" Did you mean 'RTS'?", '')
    """
    close = closest(value, allowed)
    return f" Did you mean {close!r}?" if close is not None else ""


def closest(value: object, allowed: Iterable[str]) -> str | None:
    """The allowed name nearest ``value`` (a case-only difference first, then the most similar spelling), or
    ``None`` when none is close.

    Example:
        >>> closest("adma", ["sgd", "adam"]), closest(3, ["sgd"])
        ('adam', None)
    """
    allowed = tuple(allowed)
    if not isinstance(value, str):
        return None
    lower = {a.lower(): a for a in allowed}
    if value.lower() in lower:
        return lower[value.lower()]
    close = difflib.get_close_matches(value, allowed, 1, 0.5)
    return close[0] if close else None


def check_float_tensor(name: str, x: object) -> torch.Tensor:
    """Require a floating-point tensor (float16/bfloat16/float32/float64)."""
    if not isinstance(x, torch.Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise DTypeError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it first, e.g. x.float() / 255"
        )
    return x


def check_rank(name: str, x: torch.Tensor, ranks: Sequence[int], layout: str = "") -> None:
    """Require ``x.dim()`` to be one of ``ranks``; ``layout`` names the expected dims in the message."""
    if x.dim() not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        extra = f" {layout}" if layout else ""
        raise ShapeError(f"{name} must be {want}{extra}, got shape {tuple(x.shape)}")


def check_size(name: str, size: object, rank: int) -> tuple[int, ...]:
    """Normalise an output size to a tuple of ``rank`` positive ints.

    A size read from a tensor's shape while a tracer records the model is kept as it is, so the traced graph
    follows the input's size: a 0-dim integer tensor under ``torch.jit.trace`` (and the TorchScript ONNX exporter,
    which traces), a ``torch.SymInt`` under ``torch.export`` / ``torch.compile`` with a dynamic size.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size,) * rank
    if isinstance(size, torch.Size):
        size = tuple(size)
    if not isinstance(size, (tuple, list)) or len(size) != rank:
        raise ShapeError(f"{name} must be {rank} positive ints ({'D, ' if rank == 3 else ''}H, W), got {size!r}")
    out = []
    for s in size:
        if _traced_size(s):
            out.append(s)
            continue
        if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
            raise ShapeError(f"{name} must hold positive ints, got {tuple(size)!r}")
        out.append(int(s))
    return tuple(out)


def _traced_size(s: object) -> bool:
    """Whether ``s`` is one entry of a shape read while tracing (see :func:`check_size`)."""
    if isinstance(s, torch.SymInt):
        return True
    return isinstance(s, torch.Tensor) and s.dim() == 0 and s.dtype == torch.int64 and torch.jit.is_tracing()


def check_finite(name: str, x: torch.Tensor, *, source: tuple[str, torch.Tensor] | None = None) -> None:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN/inf. Skipped while ``torch.compile`` traces.

    ``source`` is ``(name, tensor)`` of what ``x`` was computed from (the localisation input for theta): only when
    ``x`` fails is it checked too, so the message can blame the data instead of the network.
    """
    if _compiling():
        return
    if bool(torch.isfinite(x.sum())):  # fast path: one reduction; NaN/inf propagate into the sum
        return
    bad = _count_non_finite(x)
    if not bad:  # the sum overflowed (huge or half-precision values)
        return
    bad_source = _count_non_finite(source[1]) if source is not None else 0
    if source is not None and bad_source:
        cause = (
            f" because the {source[0]} holds {bad_source} non-finite value(s) of {source[1].numel()}: the data "
            "is at fault, not the network; clean it (e.g. torch.nan_to_num) or find where the NaN/inf enter"
        )
    else:
        cause = (
            "; this usually means the localisation network diverged: lower its learning rate, bound theta "
            "(bound=...) or add the identity regulariser"
        )
    raise NonFiniteError(
        f"{name} holds {bad} non-finite value(s) (NaN or inf){cause}. Pass check_finite=False to skip this check."
    )


def _count_non_finite(x: torch.Tensor) -> int:
    return int((~torch.isfinite(x)).sum()) if x.is_floating_point() or x.is_complex() else 0


def check_bool(name: str, value: object) -> bool:
    """Require a real ``bool`` (so ``align_corners="no"`` is not read as ``True``)."""
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be True or False, got {value!r}")
    return value


def check_fill_value(fill_value: object, padding_mode: str | None = None) -> None:
    """Require a number, a sequence of numbers or a 0-D / 1-D tensor; given ``padding_mode``, also require
    ``padding_mode="fill"`` for any value but 0 (a set-once module option that would otherwise be ignored)."""
    if isinstance(fill_value, torch.Tensor):
        ok = fill_value.dim() <= 1 and fill_value.numel() > 0 and not fill_value.dtype == torch.bool
    elif isinstance(fill_value, (tuple, list)):
        ok = len(fill_value) > 0 and all(_is_number(v) for v in fill_value)
    else:
        ok = _is_number(fill_value)
    if not ok:
        raise OptionError(
            "fill_value must be a number, a sequence of numbers (one per channel) or a 0-D / (C,) "
            f"tensor, got {fill_value!r}"
        )
    if padding_mode not in (None, "fill") and not (_is_number(fill_value) and fill_value == 0):
        raise OptionError(
            f"fill_value={fill_value!r} is only used with padding_mode='fill', got padding_mode={padding_mode!r}"
        )


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_positive_int(name: str, value: object) -> int:
    """Require an integer (not a bool) of at least 1; returns it as an ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise OptionError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


_AUTOCAST_DEVICES = ("cpu", "cuda")


def autocast_off(device: torch.device):
    """A context in which autocast is off for ``device`` (``cpu``/``cuda``; a no-op context for other devices).

    The grid generators and TPS solves run their matrix products inside it: autocast would run them in bfloat16 /
    float16 (errors of ~0.1 px at MNIST sizes), whatever precision their inputs are upcast to.
    """
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def autocast_enabled(device: torch.device) -> bool:
    """Whether autocast is on for ``device``."""
    return device.type in _AUTOCAST_DEVICES and bool(torch.is_autocast_enabled(device.type))
