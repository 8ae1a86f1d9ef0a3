"""torch.compile (inductor) against eager on CPU: training step and inference of the tutorial STN and our ST-CNN.

Question: how much faster does ``torch.compile`` make an ST model's training step and its inference on CPU, for the
PyTorch tutorial's STN (``torchstn.models.TutorialSTN``, ``F.affine_grid`` + ``F.grid_sample`` inline) and for our
RTS ST-CNN (``build_model("st_cnn", transform="affine", st_pool=True)``, the ``table1:RTS/st_cnn_affine`` cell's model)?
And what does the first compiled call cost?

Implementations, timed interleaved in the same process (see ``benchmarks/README.md``): ``eager`` (the model as built)
and ``compiled`` (``torch.compile(model)`` of a copy with the same weights: inductor, default mode, the model only).
Both models' transform heads are perturbed off zero so theta is not the identity.

Paths: ``fp32`` (float32, contiguous weights) for both models; for the ST-CNN also ``engine``: what the training
engine does by default on this machine for the ``table1:RTS/st_cnn_affine`` cell (``run.amp`` and
``run.memory_format`` of ``"auto"`` resolved by :func:`~torchstn.experiments.engine.config.resolve`: bfloat16
autocast on a CPU with native bfloat16, channels-last conv weights), the model as ``build_model`` makes it (its first
classifier conv a :class:`~torchstn.nn.FewChannelConv2d`); the loss takes the logits in float32, as the engine does.

Modes: ``train`` (batch 128, 1x42x42, train mode: ``zero_grad`` + forward + cross-entropy + backward + ``SGD.step``
with momentum 0.9, the optimizer step eager for both) and ``infer`` (batch 256, eval mode, forward under
``torch.no_grad``). Before timing, the first call of each implementation is timed alone (``first_call_s``: for
``compiled`` that is tracing and code generation, with inductor's on-disk caches disabled so that it is a cold
compile on every run). Then, with the initial weights restored, both are checked against a float64 eager copy in
eval mode (max deviation of the logits, and for ``train`` of the gradients relative to each parameter's largest
entry: the localisation nets' gradients are small sums with cancellation, so float32 eager itself is off by ~1e-2
there; for ``train`` this compiles the eval-mode graph once more, untimed).

The published numbers should use ``--until-quiet 600`` on a quiet machine, as the other benchmarks; the cases take
about a minute each of compilation before timing starts.

Run: ``python benchmarks/bench_compile.py`` (defaults here: 3 warm-ups, 20 samples; ``--help`` for options). Needs
a C++ compiler for inductor.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, fmt_ratio, paired_ratio, table, time_interleaved  # noqa: E402

from torchstn.experiments.engine.config import resolve  # noqa: E402
from torchstn.experiments.engine.config_io import load_config  # noqa: E402
from torchstn.experiments.engine.evaluation import amp_autocast  # noqa: E402
from torchstn.models import TutorialSTN, build_model  # noqa: E402
from torchstn.nn import to_channels_last  # noqa: E402

IN_SHAPE, NUM_CLASSES = (1, 42, 42), 10
BATCH = {"train": 128, "infer": 256}
#: name -> builder of the model on IN_SHAPE
MODELS = {
    "tutorial_stn": lambda: build_model("tutorial_stn", in_shape=IN_SHAPE, num_classes=NUM_CLASSES),
    "st_cnn_affine": lambda: build_model(
        "st_cnn", in_shape=IN_SHAPE, num_classes=NUM_CLASSES, transform="affine", st_pool=True
    ),
}
IMPLS = ("eager", "compiled")
#: the Table 1 cell whose engine defaults the ``engine`` path takes
ENGINE_CELL = "table1:RTS/st_cnn_affine"
CASES = [{"model": m, "mode": mode, "path": "fp32"} for m in MODELS for mode in ("train", "infer")] + [
    {"model": "st_cnn_affine", "mode": mode, "path": "engine"} for mode in ("train", "infer")
]


def _engine_run() -> tuple[str, str]:
    """``(amp, memory_format)`` that the engine resolves ``"auto"`` to for :data:`ENGINE_CELL` on this machine."""
    run = resolve(load_config(ENGINE_CELL)).run
    return run.amp, run.memory_format


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]()
    heads = [model.fc_loc[2]] if isinstance(model, TutorialSTN) else [st.head.linear for st in model.transformers]
    with torch.no_grad():
        for head in heads:
            head.weight.normal_(0.0, 1e-3)
    return model


def _step_fn(model, fn, mode: str, x: torch.Tensor, y: torch.Tensor, amp: str = "off"):
    """One timed call: a training step of ``model`` through ``fn`` (the model or its compiled wrapper), or a forward,
    under the autocast of ``amp`` (``run.amp``: ``off`` or ``bf16``)."""
    if mode == "infer":

        def infer():
            with torch.no_grad(), amp_autocast("cpu", amp):
                return fn(x)

        return infer
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train():
        opt.zero_grad(set_to_none=True)
        with amp_autocast("cpu", amp):
            out = fn(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()

    return train


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _parity(models: dict, fns: dict, x: torch.Tensor, y: torch.Tensor, backward: bool, amp: str = "off") -> dict:
    """Eval-mode logits (and gradients) of both implementations (under the autocast of ``amp``) against a float64
    eager copy without autocast, same weights. The gradients are compared per parameter relative to its largest entry:
    the localisation nets' gradients are small sums with cancellation, so float32 eager itself is off by ~1e-2 there."""
    ref_model = copy.deepcopy(models["eager"]).double()
    runs = {**{k: (models[k], fns[k], x, amp) for k in IMPLS}, "float64": (ref_model, ref_model, x.double(), "off")}
    out = {}
    for k, (model, fn, inp, mode_amp) in runs.items():
        model.eval().zero_grad(set_to_none=True)
        with torch.set_grad_enabled(backward), amp_autocast("cpu", mode_amp):
            logits = fn(inp).float() if mode_amp != "off" else fn(inp)
            if backward:
                F.cross_entropy(logits, y).backward()
        out[k] = (logits.detach().double(), [p.grad for p in model.parameters()] if backward else [])
    ref_logits, ref_grads = out["float64"]
    checks = {}
    for k in IMPLS:
        logits, grads = out[k]
        checks[f"{k}_logits_max_abs_err"] = float((logits - ref_logits).abs().max())
        if backward:
            checks[f"{k}_grads_max_rel_err"] = max(
                _max_rel(a.double(), b) for a, b in zip(grads, ref_grads) if a is not None and b is not None
            )
    return checks


def run_case(case: dict, method: Method) -> dict:
    name, mode = case["model"], case["mode"]
    amp, memory_format = _engine_run() if case["path"] == "engine" else ("off", "contiguous")
    torch._dynamo.reset()
    torch._inductor.config.force_disable_caches = True  # first_call_s: a cold compile, as on a fresh machine
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH[mode], *IN_SHAPE, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (BATCH[mode],), generator=gen)
    eager = _build(name)
    if memory_format == "channels_last":
        to_channels_last(eager)
    models = {"eager": eager, "compiled": copy.deepcopy(eager)}  # same weights
    fns = {"eager": eager, "compiled": torch.compile(models["compiled"])}
    weights = copy.deepcopy(eager.state_dict())
    steps, first_call_s = {}, {}
    for k in IMPLS:
        models[k].train(mode == "train")
        steps[k] = _step_fn(models[k], fns[k], mode, x, y, amp)
        t0 = time.perf_counter()
        steps[k]()  # compiled: traces and generates the code of this mode
        first_call_s[k] = round(time.perf_counter() - t0, 3)
    for k in IMPLS:  # the first training step moved the weights (differently: dropout): same weights again
        models[k].load_state_dict(weights)
    checks = _parity(models, fns, x, y, backward=mode == "train", amp=amp)  # full batch: no new (dynamic) shape
    for k in IMPLS:
        models[k].train(mode == "train")
    stats = time_interleaved(steps, method)
    return {
        "stats": stats,
        "speedup": paired_ratio(stats, "eager", "compiled"),
        "first_call_s": first_call_s,
        "checks": checks,
        "batch": BATCH[mode],
        "amp": amp,
        "memory_format": memory_format,
        "torch_threads": torch.get_num_threads(),
    }


def _quiet(res: dict) -> str:
    g = res.get("gate")
    return f"{g['quiet_repeats']}/{g['repeats']}" if g else "?"


def render(doc: dict) -> str:
    rows = []
    for res in doc["cases"]:
        c, s, ch = res["case"], res["stats"], res["checks"]
        err = " / ".join(
            ", ".join(
                f"{ch[f'{k}_{what}']:.0e}"
                for what in ("logits_max_abs_err", "grads_max_rel_err")
                if f"{k}_{what}" in ch
            )
            for k in IMPLS
        )
        rows.append(
            [
                c["model"],
                c["mode"],
                f"{c.get('path', 'fp32')}: {res.get('amp', 'off')}, {res.get('memory_format', 'contiguous')}",
                f"{res['batch']}x{'x'.join(map(str, IN_SHAPE))}",
                fmt_ms(s["eager"]),
                fmt_ms(s["compiled"]),
                fmt_ratio(res["speedup"]),
                f"{res['first_call_s']['compiled']:.1f}",
                err,
                _quiet(res),
            ]
        )
    return "\n".join(
        [
            f"Command: `{doc['command']}`  ",
            _common.env_line(doc),
            "",
            (
                "Time per call in ms, median [IQR] (train: zero_grad + forward + loss + backward + SGD step; infer: forward "
                "under no_grad); speed-up = eager / compiled per interleaved repeat, median [quartiles]; first call: seconds "
                "of the first compiled call (compilation); err eager / compiled: deviation from a float64 eager copy in eval "
                "mode, logits max abs, gradients max relative to each parameter's largest entry; quiet: repeats that "
                "started with the other processes idle."
            ),
            "",
            table(
                [
                    "model",
                    "mode",
                    "path: amp, weights",
                    "input",
                    "eager",
                    "compiled (inductor)",
                    "speed-up",
                    "first call s",
                    "err eager / compiled",
                    "quiet",
                ],
                rows,
            ),
        ]
    )


if __name__ == "__main__":
    _common.main(
        "compile",
        __doc__.splitlines()[0],
        CASES,
        run_case,
        render,
        argv=["--warmup", "3", "--repeats", "20", *sys.argv[1:]],
    )
