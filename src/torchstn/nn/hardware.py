"""What the hardware offers a training step: native bfloat16 on the CPU, the channels-last memory format, and a
heap that keeps the memory a step frees.

On a CPU with bfloat16 instructions (x86 AVX512-BF16 or AMX-BF16), ``torch.autocast("cpu", dtype=torch.bfloat16)``
runs the convolutions of the paper's networks in bfloat16, which takes a fraction of the float32 time; without them
bfloat16 is emulated and gains little. Convolution weights in the channels-last layout (``NHWC``) spare oneDNN the
layout conversions of every call. glibc's ``malloc`` returns large freed blocks to the system at once, so each
training step maps its large temporaries afresh and the kernel zero-fills their pages again; keeping them in the
heap (:func:`hold_freed_memory`) spares that. ``BENCHMARKS.md`` ("CPU training step") has the measured effect of
each.

Example:
    >>> import torch
    >>> net = to_channels_last(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(4, 2)))
    >>> net[0].weight.is_contiguous(memory_format=torch.channels_last), net[1].weight.is_contiguous()
    (True, True)
    >>> isinstance(native_bf16("cpu"), bool)
    True
"""

from __future__ import annotations

import torch
from torch import nn

from torchstn.errors import OptionError

__all__ = ["native_bf16", "to_channels_last", "hold_freed_memory"]

#: glibc ``mallopt`` parameters and the values :func:`hold_freed_memory` sets (those of ``benchmarks/_machine.py``)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HELD = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: (1 << 31) - 1}

#: CPU features (``torch.cpu.get_capabilities()`` keys) that compute bfloat16 products in hardware
_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CPU with AVX512-BF16 or AMX-BF16, or a CUDA GPU that
    supports bfloat16 (``torch.cuda.is_bf16_supported``). Other devices, and CPUs whose features torch cannot
    report, give ``False``.

    Raises:
        OptionError: ``device`` is not a device name.

    Example:
        >>> native_bf16("meta")
        False
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise OptionError(f"device must be a torch device or its name (e.g. 'cpu'), got {device!r}") from e
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    get = getattr(torch.cpu, "get_capabilities", None)
    try:
        caps = get() if get is not None else {}
    except RuntimeError:  # cpuinfo could not read this CPU
        return False
    return any(bool(caps.get(f, False)) for f in _BF16_FEATURES)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Put every 4-D parameter and buffer of ``module`` (2-D convolution weights) in the channels-last layout, in
    place, and return ``module``. Other tensors (3-D convolutions' 5-D weights included) keep their layout.

    The values and the ``state_dict`` keys do not change; a state dict saved from either layout loads into the other.

    Raises:
        OptionError: ``module`` is not an ``nn.Module``.
    """
    if not isinstance(module, nn.Module):
        raise OptionError(f"to_channels_last takes an nn.Module, got {type(module).__name__}")

    def convert(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

    return module._apply(convert)


def hold_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed memory in the process (blocks up to 1 GiB come from the heap, and the
    heap is not trimmed below 2 GiB of free space) instead of returning it to the system at each ``free``.

    A CPU training step allocates and frees the same large tensors every iteration; by default each comes from a
    fresh ``mmap`` whose pages the kernel must fault in and zero again. Held, the next step reuses them. The cost:
    the process keeps its peak memory. Affects the whole process, from the call on (the environment variables
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` do the same from the start).

    Returns:
        ``True`` if glibc accepted the settings; ``False`` where there is no glibc (macOS, Windows, musl).

    Example:
        >>> isinstance(hold_freed_memory(), bool)
        True
    """
    import ctypes

    try:  # glibc's mallopt, among the process's own symbols; none on macOS or Windows, musl's refuses (returns 0)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _HELD.items())
