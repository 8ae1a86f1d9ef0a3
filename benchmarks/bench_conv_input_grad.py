"""The ST-CNN's first classifier conv with its input gradient: FewChannelConv2d against nn.Conv2d (issue 16).

Question: how much faster is forward + backward of the first conv of the Table 1 ST-CNN (1 input channel, 9x9,
'same' padding, 62 output channels: the width ``torchstn.models.st_cnn`` gives at both sizes) when it must pass
its gradient back to the spatial transformer, with :class:`torchstn.nn.FewChannelConv2d` (input gradient as a
matmul + chunked shift-and-add, weight/bias gradients from the native kernel without the input gradient) than
with ``nn.Conv2d`` (oneDNN's backward-data kernel)? The issue measured the input gradient as the slow part.

Implementations, timed interleaved in the same process (``benchmarks/README.md``): ``nn_conv2d`` and
``few_channel``, the same weights, each step = zero the gradients, forward, ``backward`` of a fixed random output
gradient (input, weight and bias gradients), float32. Cases: RTS 42x42 and R 28x28, batch 128, 1 and 2 torch
threads (``--threads`` is overridden per case). The check: the largest deviation of the output and of the three
gradients between the two, relative to the largest entry of each.

Run: ``python benchmarks/bench_conv_input_grad.py`` (defaults here: 3 warm-ups, 15 samples; ``--help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, fmt_ratio, paired_ratio, table, time_interleaved  # noqa: E402

from torchstn.nn import FewChannelConv2d  # noqa: E402

CHANNELS = 62  # c1 of the Table 1 ST-CNN at the default budget, 28x28 and 42x42 alike
CASES = [{"variant": v, "size": s, "batch": 128, "threads": t} for t in (1, 2) for v, s in (("RTS", 42), ("R", 28))]
IMPLS = ("nn_conv2d", "few_channel")


def _step(conv: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    def step():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        conv(x).backward(grad_out)

    return step


def _check(convs: dict[str, nn.Module], x: torch.Tensor, grad_out: torch.Tensor) -> dict[str, float]:
    """Largest deviation few_channel - nn_conv2d, relative to the largest entry, per output / gradient."""
    got = {}
    for name, conv in convs.items():
        xi = x.detach().clone().requires_grad_()
        conv.zero_grad(set_to_none=True)
        y = conv(xi)
        y.backward(grad_out)
        got[name] = {"output": y.detach(), "input_grad": xi.grad, "weight_grad": conv.weight.grad}
        got[name]["bias_grad"] = conv.bias.grad
    ref, new = got["nn_conv2d"], got["few_channel"]
    return {k: float((new[k] - ref[k]).abs().max() / ref[k].abs().max()) for k in ref}


def run_case(case: dict, method: Method) -> dict:
    torch.set_num_threads(case["threads"])  # overrides --threads for this case
    B, S = case["batch"], case["size"]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ref = nn.Conv2d(1, CHANNELS, 9, padding=4)
    few = FewChannelConv2d(1, CHANNELS, 9, padding=4)
    few.load_state_dict(ref.state_dict())
    convs = {"nn_conv2d": ref, "few_channel": few}
    x = torch.rand(B, 1, S, S, generator=g).requires_grad_()
    grad_out = torch.randn(B, CHANNELS, S, S, generator=g)
    checks = _check(convs, x, grad_out)
    stats = time_interleaved({k: _step(m, x, grad_out) for k, m in convs.items()}, method)
    return {"stats": stats, "speedup": paired_ratio(stats, "nn_conv2d", "few_channel"), "checks": checks}


def render(doc: dict) -> str:
    rows = []
    for res in doc["cases"]:
        c = res["case"]
        rows.append(
            [
                f"{c['variant']} {c['batch']}x1x{c['size']}x{c['size']}",
                str(c["threads"]),
                fmt_ms(res["stats"]["nn_conv2d"]),
                fmt_ms(res["stats"]["few_channel"]),
                fmt_ratio(res["speedup"]),
                f"{res['gate']['quiet_repeats']}/{res['gate']['repeats']}" if "gate" in res else "-",
                f"{max(res['checks'].values()):.1e}",
            ]
        )
    return "\n".join(
        [
            (
                "First ST-CNN conv (1 -> 62 channels, 9x9, 'same'), forward + backward with input, weight and bias "
                "gradients, float32: median ms [IQR]; speed-up = nn_conv2d / few_channel per interleaved repeat, "
                "median [quartiles]; deviation = largest |few - native| relative to the largest entry (output and "
                "the three gradients)"
            ),
            "",
            table(["input", "threads", "nn.Conv2d", "FewChannelConv2d", "speed-up", "quiet", "deviation"], rows),
            "",
            _common.env_line(doc),
        ]
    )


if __name__ == "__main__":
    _common.main(
        "conv_input_grad",
        __doc__.splitlines()[0],
        CASES,
        run_case,
        render,
        argv=["--warmup", "3", "--repeats", "15", *sys.argv[1:]],
    )
