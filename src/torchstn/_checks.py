"""Validation helpers shared by every public entry point (one place, one message style)."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Sequence

import torch

from torchstn.errors import DTypeError, NonFiniteError, OptionError, ShapeError


def look_up_option(name: str, value: object, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise raise :class:`OptionError` with a suggestion."""
    allowed = tuple(allowed)
    if isinstance(value, str) and value in allowed:
        return value
    hint = ""
    if isinstance(value, str):
        lower = {a.lower(): a for a in allowed}
        close = [lower[value.lower()]] if value.lower() in lower else difflib.get_close_matches(value, allowed, 1, 0.5)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    raise OptionError(f"{name} must be one of {list(allowed)}, got {value!r}.{hint}")


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
    return (isinstance(s, torch.Tensor) and s.dim() == 0 and s.dtype == torch.int64
            and torch.jit.is_tracing())  # fmt: skip


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN/inf. Skipped while ``torch.compile`` traces."""
    if _compiling():
        return
    if bool(torch.isfinite(x.sum())):  # fast path: one reduction; NaN/inf propagate into the sum
        return
    if not bool(torch.isfinite(x).all()):  # the sum overflowed (huge or half-precision values): check exactly
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(
            f"{name} holds {bad} non-finite value(s) (NaN or inf); this usually means the localisation network "
            "diverged: lower its learning rate, bound theta (bound=...) or add the identity regulariser. "
            "Pass check_finite=False to skip this check."
        )


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return False


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
    """Whether autocast is on for ``device`` (works from torch 2.1, before ``is_autocast_enabled(device_type)``)."""
    if device.type not in _AUTOCAST_DEVICES:
        return False
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_cpu_enabled() if device.type == "cpu" else torch.is_autocast_enabled())
