"""What the hardware offers a training step: native bfloat16 on the CPU, and the channels-last memory format.

On a CPU with bfloat16 instructions (x86 AVX512-BF16 or AMX-BF16), ``torch.autocast("cpu", dtype=torch.bfloat16)``
runs the convolutions of the paper's networks in bfloat16, which takes a fraction of the float32 time; without them
bfloat16 is emulated and gains little. Convolution weights in the channels-last layout (``NHWC``) spare oneDNN the
layout conversions of every call. ``BENCHMARKS.md`` ("CPU training step") has the measured effect of each.

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

__all__ = ["native_bf16", "to_channels_last"]

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
