"""The Table 1 training step on a CPU: the engine's step today against the plain float32 step (issue 16).

Question: how many more images per second does a Table 1 cell train on a CPU with what the engine now does by
default than with the step as it was: ``nn.Conv2d`` everywhere, float32, contiguous weights? Goal: >= 2x for the
ST-CNN (affine, TPS) and the CNN, on RTS 42x42 and R 28x28, batch 128, on 1 and on 2 threads; stretch 3x.

Each model is built from its Table 1 cell (``table1:<variant>/<model>``, ``cpu`` schedule: Adam, batch 128) and
copied, same weights, into the implementations below, timed interleaved in one process (``benchmarks/README.md``).
A step is ``zero_grad`` + forward (under the autocast of ``run.amp``) + float32 cross-entropy + backward +
``Adam.step`` on a fixed batch, as :func:`torchstn.experiments.engine.steps._iteration` does it:

* ``baseline``: the step before issue 16: every conv an ``nn.Conv2d``, float32, contiguous weights;
* ``fast_conv``: the classifier's first conv a :class:`~torchstn.nn.FewChannelConv2d` (the input gradient the
  transformer needs, computed fast), float32, contiguous: what a CPU without native bfloat16 gets by default;
* ``channels_last``: ``fast_conv`` with channels-last conv weights (``run.memory_format = "channels_last"``);
* ``bf16_channels_last``: ``engine`` with channels-last conv weights;
* ``engine``: what the engine does by default on this machine: the model as built, ``run.amp = "auto"`` resolved
  (:func:`~torchstn.experiments.engine.config.resolve_run`: bfloat16 autocast where the CPU has it), the default
  ``run.memory_format``.

The harness runs every case in a process whose ``malloc`` keeps freed memory (``benchmarks/_machine.py``), as the
engine's own processes now do (:func:`torchstn.nn.hold_freed_memory`); a process with glibc's defaults is slower,
by a factor ``benchmarks/bench_heap.py`` measures, and this benchmark does not show.

The plain CNN's first conv sees the data, which needs no gradient, so ``fast_conv`` changes nothing there.
Ratios are per interleaved repeat, ``baseline / x``, median [quartiles]; images/s from the median step time.

Run: ``python benchmarks/bench_cpu_step.py`` (both thread counts; ``--help``; defaults here: 3 warm-ups, 12 samples).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, fmt_ratio, paired_ratio, table, time_interleaved  # noqa: E402

from torchstn.experiments.engine.config import resolve  # noqa: E402
from torchstn.experiments.engine.config_io import load_config  # noqa: E402
from torchstn.experiments.engine.evaluation import amp_autocast  # noqa: E402
from torchstn.experiments.engine.schedules import build_optimizer  # noqa: E402
from torchstn.experiments.engine.steps import model_from_config  # noqa: E402
from torchstn.nn import FewChannelConv2d, to_channels_last  # noqa: E402

GOAL = 2.0
MODELS = ("st_cnn_affine", "st_cnn_tps", "cnn")
CASES = [{"variant": v, "model": m, "threads": t} for t in (1, 2) for v in ("RTS", "R") for m in MODELS]
IMPLS = ("baseline", "fast_conv", "channels_last", "bf16_channels_last", "engine")


def plain_convs(model: nn.Module) -> nn.Module:
    """``model`` with every :class:`FewChannelConv2d` replaced by an ``nn.Conv2d`` holding the same weights."""
    for name, child in model.named_children():
        if isinstance(child, FewChannelConv2d):
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding)
            conv.load_state_dict(child.state_dict())
            setattr(model, name, conv)
        else:
            plain_convs(child)
    return model


def train_step(model: nn.Module, cfg, x: torch.Tensor, y: torch.Tensor, amp: str):
    """The step of ``model`` on the batch ``(x, y)`` as the engine runs it under ``amp``, with the cell's optimiser."""
    opt = build_optimizer(model, cfg.optim)

    def step():
        opt.zero_grad(set_to_none=True)
        with amp_autocast("cpu", amp):
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()

    return step


def run_case(case: dict, method: Method) -> dict:
    torch.set_num_threads(case["threads"])  # overrides --threads for this case
    cfg = resolve(load_config(f"table1:{case['variant']}/{case['model']}"))
    size = 42 if case["variant"] == "RTS" else 28
    torch.manual_seed(0)
    built = model_from_config(cfg, (1, size, size), 10)
    models = {
        "baseline": plain_convs(copy.deepcopy(built)),
        "fast_conv": copy.deepcopy(built),
        "channels_last": to_channels_last(copy.deepcopy(built)),
        "bf16_channels_last": to_channels_last(copy.deepcopy(built)),
        "engine": copy.deepcopy(built),
    }
    if cfg.run.memory_format == "channels_last":
        to_channels_last(models["engine"])
    amps = {"baseline": "off", "fast_conv": "off", "channels_last": "off", "bf16_channels_last": "bf16"}
    amps["engine"] = cfg.run.amp
    g = torch.Generator().manual_seed(0)
    B = cfg.optim.batch_size
    x, y = torch.rand(B, 1, size, size, generator=g), torch.randint(0, 10, (B,), generator=g)
    stats = time_interleaved({k: train_step(m, cfg, x, y, amps[k]) for k, m in models.items()}, method)
    return {
        "stats": stats,
        "ratios": {k: paired_ratio(stats, "baseline", k) for k in IMPLS[1:]},
        "batch": B,
        "engine": {"amp": cfg.run.amp, "memory_format": cfg.run.memory_format},
    }


def render(doc: dict) -> str:
    rows = []
    for res in doc["cases"]:
        c, s, r, B = res["case"], res["stats"], res["ratios"], res["batch"]
        ips = {k: B / (s[k]["median_ms"] / 1e3) for k in IMPLS}
        met = "met" if r["engine"]["paired_median"] >= GOAL else "**not met**"
        rows.append(
            [
                f"{c['variant']} {c['model']}",
                str(c["threads"]),
                fmt_ms(s["baseline"]),
                fmt_ms(s["engine"]),
                f"{ips['baseline']:,.0f} -> {ips['engine']:,.0f}",
                fmt_ratio(r["fast_conv"]),
                fmt_ratio(r["channels_last"]),
                fmt_ratio(r["bf16_channels_last"]),
                fmt_ratio(r["engine"]),
                f">= {GOAL:g}x: {met}",
                f"{res['engine']['amp']}, {res['engine']['memory_format']}",
                f"{res['gate']['quiet_repeats']}/{res['gate']['repeats']}" if "gate" in res else "-",
            ]
        )
    return "\n".join(
        [
            f"Command: `{doc['command']}`  ",
            _common.env_line(doc),
            "",
            "Table 1 training step (Adam, batch 128): median ms [IQR]; images/s from the medians; speed-ups = "
            "baseline / x per interleaved repeat, median [quartiles]; `fast_conv`: FewChannelConv2d first conv "
            "(float32: a CPU without bf16), `channels_last`: + channels-last weights, `bf16 CL`: the engine's step "
            "with channels-last weights, `engine`: the engine's defaults on this CPU.",
            "",
            table(
                [
                    "cell",
                    "threads",
                    "baseline",
                    "engine",
                    "images/s",
                    "fast_conv",
                    "channels_last",
                    "bf16 CL",
                    "engine",
                    "goal",
                    "engine runs",
                    "quiet",
                ],
                rows,
            ),
        ]
    )


if __name__ == "__main__":
    _common.main(
        "cpu_step",
        __doc__.splitlines()[0],
        CASES,
        run_case,
        render,
        argv=["--warmup", "3", "--repeats", "12", *sys.argv[1:]],
    )
