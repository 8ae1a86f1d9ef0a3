"""What torchstn does differently while a tracer records it, in one place.

Tracers: ``torch.jit.trace``, the TorchScript ONNX exporter (``torch.onnx.export(..., dynamo=False)``, which traces
with ``torch.jit.trace``'s machinery), the dynamo ONNX exporter and ``torch.export`` (fake tensors). Values that do
not depend on the input (a family's parameter count, the TPS basis matrix) are built outside the trace, so they
become constants of the graph and the first and a repeated trace record the same graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["is_tracing", "jit_tracing_paused", "static_size", "untraced"]


def is_tracing() -> bool:
    """Whether ``torch.jit.trace``, an ONNX exporter or ``torch.export`` is recording the current call (``False``
    eagerly and inside ``torch.compile``).

    Example:
        >>> is_tracing()
        False
        >>> seen = []
        >>> _ = torch.jit.trace(lambda x: seen.append(is_tracing()) or x * 2, torch.zeros(1), check_trace=False)
        >>> seen
        [True]
    """
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or bool(torch.compiler.is_exporting())


@contextlib.contextmanager
def jit_tracing_paused() -> Iterator[None]:
    """Run the block without ``torch.jit.trace`` recording it (a no-op when nothing traces)."""
    state = torch._C._get_tracing_state()
    # torch's stubs (torch/_C/__init__.pyi) declare _get_tracing_state but not its setter, which torch has (its own
    # torch.jit code calls it)
    torch._C._set_tracing_state(None)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)  # type: ignore[attr-defined]


def static_size(size) -> tuple[int, ...]:
    """``size`` as Python ints: a size traced from an input's shape (0-dim tensors under ``torch.jit.trace``) is
    fixed to its value in the example input, without the tracer's warning (the caller guards the graph)."""
    if not torch.jit.is_tracing():
        return tuple(int(s) for s in size)
    with jit_tracing_paused():
        return tuple(int(s) for s in size)


def untraced() -> contextlib.ExitStack:
    """A context in which tensors are real and unrecorded, even inside a fake-tensor trace (``torch.export``, the
    dynamo ONNX exporter) or a ``torch.jit.trace``: what is built inside it is a constant of the traced graph."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

    stack = contextlib.ExitStack()
    stack.enter_context(jit_tracing_paused())
    stack.enter_context(unset_fake_temporarily())
    stack.enter_context(disable_proxy_modes_tracing())
    return stack
