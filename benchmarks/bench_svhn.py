"""SVHN training iteration: ST-CNN Multi (and Single) against the plain CNN (paper §4.2: "Multi is only 6% slower").

Question: how much slower is one SGD training iteration of ST-CNN Multi (an affine ST before each of the first four
conv layers) than the paper's 11-layer CNN? Goal: at most 10% slower on CPU, batch 32, 64x64 inputs.

Implementations, timed interleaved in the same process (see ``benchmarks/README.md``): ``cnn``, ``st_single``,
``st_multi`` at the paper's widths (``torchstn.experiments.svhn.models``), each trained by the engine as a real run
is: one iteration of :func:`torchstn.experiments.engine.steps.train_steps` on the ``svhn`` task with the
``svhn_paper`` schedule at lr / 10 (the batch drawn from cached uint8 images and normalised, forward with the
transformers' theta recorded, the 5-head sequence loss, backward, ``SGD.step`` with momentum 0.9, weight decay 5e-4
and the localisation nets at a tenth of the lr, the scheduler step), train mode (dropout 0.5 on). The data are
random images in memory, as the cache holds them. The transformers' regression weights are perturbed off zero so
that theta is not the identity (the sampling cost is the same either way, but the localisation nets' backward is
then non-trivial).

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

from torchstn.experiments.engine.config import resolve  # noqa: E402
from torchstn.experiments.engine.steps import train_steps  # noqa: E402
from torchstn.experiments.engine.trainer import new_state, task_of  # noqa: E402
from torchstn.experiments.svhn import svhn_config  # noqa: E402
from torchstn.experiments.svhn.data import SVHNData, SVHNSequences  # noqa: E402

IMPLS = {"cnn": "svhn_cnn", "st_single": "svhn_st_cnn_single", "st_multi": "svhn_st_cnn_multi"}
GOAL = 1.10  # st_multi step time / cnn step time
DEVICE = "cuda" if "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cuda" else "cpu"
#: one case per torch thread count: on a shared 2-core machine, 2 threads also measure the other processes' load
CASES = [{"batch": 32, "size": 64, "device": DEVICE, "threads": t} for t in (1, 2)]


def _train_set(n: int, size: int) -> SVHNSequences:
    """``n`` random ``size`` px images with random sequence labels, as a cache holds them."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 11, (n, 5), generator=gen)
    data = SVHNData(images, labels, (labels < 10).sum(1), torch.full((3,), 0.5), torch.full((3,), 0.29), [""] * n)
    return SVHNSequences(data, train=True)


def run_case(case: dict, method: Method) -> dict:
    device, B, S = case["device"], case["batch"], case["size"]
    torch.set_num_threads(case["threads"])  # overrides --threads for this case
    train_set = _train_set(4 * B, S)
    fns, params = {}, {}
    for name, model in IMPLS.items():
        # lr / 10: on random images the paper's 0.01 diverges within a few iterations (and the engine stops on a
        # non-finite loss); the learning rate does not change what an iteration costs
        cfg = resolve(
            svhn_config(None, model=model, size=S, device=device, overrides=[f"optim.batch_size={B}", "optim.lr=0.001"])
        )
        state = new_state(cfg, task_of(cfg), train_set, torch.device(device))
        with torch.no_grad():
            for st in state.model.transformers:
                st.head.linear.weight.normal_(0.0, 1e-4)

        def step(state=state):
            train_steps(state, state.step + 1)
            if device == "cuda":
                torch.cuda.synchronize()

        fns[name] = step
        params[name] = sum(p.numel() for p in state.model.parameters())
    stats = time_interleaved(fns, method)
    return {
        "stats": stats,
        "params": params,
        "ratios": {k: paired_ratio(stats, k, "cnn") for k in IMPLS if k != "cnn"},
    }  # slowdown vs cnn


def render(doc: dict) -> str:
    rows = []
    for res in doc["cases"]:
        c = res["case"]
        for name in IMPLS:
            ratio = "1 (reference)" if name == "cnn" else fmt_ratio(res["ratios"][name])
            rows.append(
                [
                    f"{c['batch']}x3x{c['size']}x{c['size']} ({c['device']})",
                    str(c["threads"]),
                    name,
                    f"{res['params'][name] / 1e6:.2f}M",
                    fmt_ms(res["stats"][name]),
                    ratio,
                ]
            )
    verdicts = [
        f"{r['case']['threads']} thread(s): st_multi / cnn = {r['ratios']['st_multi']['paired_median']:.3f} "
        f"(goal <= {GOAL}: "
        f"{'met' if r['ratios']['st_multi']['paired_median'] <= GOAL else 'NOT met'})"
        for r in doc["cases"]
    ]
    return "\n".join(
        [
            (
                "SVHN training iteration (the engine's train_steps: batch, forward, loss, backward, SGD and scheduler "
                "steps), median ms [IQR]; slowdown = paired median of per-repeat ratios to the CNN [quartiles]"
            ),
            "",
            table(["input", "threads", "model", "params", "iteration ms", "time / cnn"], rows),
            "",
            *verdicts,
            "",
            _common.env_line(doc),
        ]
    )


if __name__ == "__main__":
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--device" and (i == 0 or sys.argv[i] != "--device")]
    _common.main(
        "svhn", __doc__.splitlines()[0], CASES, run_case, render, argv=["--warmup", "2", "--repeats", "10", *argv]
    )
