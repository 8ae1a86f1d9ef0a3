"""SVHN training step: ST-CNN Multi (and Single) against the plain CNN (paper §4.2: "Multi is only 6% slower").

Question: how much slower is one SGD training step of ST-CNN Multi (an affine ST before each of the first four conv
layers) than the paper's 11-layer CNN? Goal: at most 10% slower on CPU, batch 32, 64x64 inputs.

Implementations, timed interleaved in the same process (see ``benchmarks/README.md``): ``cnn``, ``st_single``,
``st_multi`` at the paper's widths (``torchstn.experiments.svhn.models``), train mode (dropout 0.5 on), one step =
``zero_grad`` + forward + the 5-head sequence loss + backward + ``SGD.step`` (momentum 0.9, weight decay 5e-4,
localisation lr / 10). The transformers' regression weights are perturbed off zero so that theta is not the identity
(the sampling cost is the same either way, but the localisation nets' backward is then non-trivial).

Two cases: 1 and 2 torch threads (``--threads`` is overridden per case; the environment line reports the
harness default). On a 2-core machine shared with other work, 2 threads also measure their load: OpenMP regions
wait for descheduled threads, which hurts the model with more small ops (the transformers' grids, samplers and FC
localisation nets) most.

Run: ``python benchmarks/bench_svhn.py`` (defaults here: 2 warm-ups, 10 samples; ``--help`` for options;
``--device cuda`` times on a GPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import Method, fmt_ms, fmt_ratio, paired_ratio, table, time_interleaved  # noqa: E402

from torchstn.experiments.svhn.models import sequence_loss, svhn_cnn, svhn_st_cnn_multi, svhn_st_cnn_single  # noqa: E402
from torchstn.nn import param_groups  # noqa: E402

IMPLS = {"cnn": svhn_cnn, "st_single": svhn_st_cnn_single, "st_multi": svhn_st_cnn_multi}
GOAL = 1.10  # st_multi step time / cnn step time
DEVICE = "cuda" if "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cuda" else "cpu"
#: one case per torch thread count: on a shared 2-core machine, 2 threads also measure the other processes' load
CASES = [{"batch": 32, "size": 64, "device": DEVICE, "threads": t} for t in (1, 2)]


def run_case(case: dict, method: Method) -> dict:
    device, B, S = case["device"], case["batch"], case["size"]
    torch.set_num_threads(case["threads"])  # overrides --threads for this case
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, S, S, generator=gen).to(device)
    y = torch.randint(0, 11, (B, 5), generator=gen).to(device)
    fns, params = {}, {}
    for name, builder in IMPLS.items():
        torch.manual_seed(0)
        model = builder((3, S, S)).to(device).train()
        with torch.no_grad():
            for st in model.transformers:
                st.head.linear.weight.normal_(0.0, 1e-4)
        opt = torch.optim.SGD(param_groups(model, 0.01, 0.1), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            sequence_loss(model(x), y).backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()

        fns[name] = step
        params[name] = sum(p.numel() for p in model.parameters())
    stats = time_interleaved(fns, method)
    return {"stats": stats, "params": params,
            "ratios": {k: paired_ratio(stats, k, "cnn") for k in IMPLS if k != "cnn"}}  # slowdown vs cnn


def render(doc: dict) -> str:
    rows = []
    for res in doc["cases"]:
        c = res["case"]
        for name in IMPLS:
            ratio = "1 (reference)" if name == "cnn" else fmt_ratio(res["ratios"][name])
            rows.append([f"{c['batch']}x3x{c['size']}x{c['size']} ({c['device']})", str(c["threads"]), name,
                         f"{res['params'][name] / 1e6:.2f}M", fmt_ms(res["stats"][name]), ratio])  # fmt: skip
    verdicts = [f"{r['case']['threads']} thread(s): st_multi / cnn = {r['ratios']['st_multi']['paired_median']:.3f} "
                f"(goal <= {GOAL}: "
                f"{'met' if r['ratios']['st_multi']['paired_median'] <= GOAL else 'NOT met'})" for r in doc["cases"]]
    return "\n".join([
        ("SVHN training step (zero_grad + forward + loss + backward + SGD step), median ms [IQR]; slowdown = paired "
         "median of per-repeat ratios to the CNN [quartiles]"),
        "", table(["input", "threads", "model", "params", "step ms", "time / cnn"], rows), "", *verdicts, "",
        _common.env_line(doc)])  # fmt: skip


if __name__ == "__main__":
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--device" and (i == 0 or sys.argv[i] != "--device")]
    _common.main("svhn", __doc__.splitlines()[0], CASES, run_case, render,
                 argv=["--warmup", "2", "--repeats", "10", *argv])
