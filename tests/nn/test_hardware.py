"""torchstn.nn.hardware: native bfloat16 detection, channels-last conversion, the held heap."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

from torchstn.errors import OptionError
from torchstn.nn import native_bf16, to_channels_last


def test_native_bf16_reads_the_cpu_features():
    caps = torch.cpu.get_capabilities()
    assert native_bf16("cpu") == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    assert native_bf16(torch.device("cpu")) == native_bf16("cpu")
    assert native_bf16("meta") is False


def test_native_bf16_refuses_what_is_not_a_device():
    with pytest.raises(OptionError, match="device must be"):
        native_bf16("gpu0")
    with pytest.raises(OptionError, match="device must be"):
        native_bf16(3.5)  # type: ignore[arg-type]


def test_to_channels_last_changes_the_layout_not_the_function():
    def make():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(256, 2)
        )

    net, twin = make(), make()
    x = torch.rand(2, 3, 10, 10)
    before = net(x)
    assert to_channels_last(net) is net
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net[0].weight.is_contiguous()  # really another layout
    assert net[4].weight.is_contiguous()  # 2-D weights keep theirs
    assert torch.allclose(net(x), before, atol=1e-6)
    with torch.no_grad():
        twin[0].weight.add_(1.0)
    twin.load_state_dict(net.state_dict())  # a channels-last state dict loads into a contiguous model
    assert torch.allclose(twin(x), before, atol=1e-6) and twin[0].weight.is_contiguous()


def test_to_channels_last_leaves_3d_convolutions_and_refuses_non_modules():
    net = to_channels_last(nn.Conv3d(1, 2, 3))
    assert net.weight.is_contiguous()
    with pytest.raises(OptionError, match="nn.Module"):
        to_channels_last(torch.zeros(1, 1, 2, 2))  # type: ignore[arg-type]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_hold_freed_memory_keeps_large_blocks_in_the_heap():
    """In a fresh process: a freed 64 MB tensor's memory stays with the process (the next allocation of that size
    reuses it) once the heap is held, and goes back to the system without it."""
    script = """
import sys, torch
from torchstn.nn import hold_freed_memory
def rss_kb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
if sys.argv[1] == 'held':
    assert hold_freed_memory()
x = torch.ones(16 << 20)  # 64 MB, touched
base = rss_kb()
del x
print(base - rss_kb())
"""
    freed = {
        k: int(subprocess.run([sys.executable, "-c", script, k], capture_output=True, text=True, check=True).stdout)
        for k in ("default", "held")
    }
    assert freed["default"] > 50_000  # kB returned to the system at the free
    assert freed["held"] < 5_000  # kept for the next step
