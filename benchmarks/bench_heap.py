"""The Table 1 training step as a user's process runs it: before issue 16, and now with and without a held heap.

Questions: how much faster is the engine's CPU training step in a process whose ``malloc`` keeps freed memory
(:func:`torchstn.nn.hold_freed_memory`, what ``torchstn train`` now does on a CPU) than in a process with glibc's
defaults, where every step maps its large temporaries afresh and the kernel zero-fills their pages again? And so,
how much faster is a user's training process now than before (``bench_cpu_step.py`` compares the steps inside the
harness's held heap only)?

Three implementations: ``main`` (the step before issue 16: every conv an ``nn.Conv2d``, float32, default heap),
``default_heap`` (the engine's step, default heap) and ``engine`` (the engine's step, heap held, as ``torchstn
train`` runs it).

The setting is process-wide, so the two cannot be interleaved in one process as the other benchmarks do: each
sample is a fresh process (allocator variables removed from its environment) that builds the cell's model as the
engine does (``run.amp`` resolved), trains ``--warmup`` untimed steps, then reports the median of ``--steps`` timed
ones (``zero_grad`` + forward under autocast + float32 cross-entropy + backward + Adam, batch 128). Each round runs
the three in turn (the order rotated by the round), ``--rounds`` times per case; ratios are per round, median
[quartiles].

Run: ``python benchmarks/bench_heap.py`` (``--help``); writes ``benchmarks/results/heap.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _machine import environment  # noqa: E402

CELLS = [f"{v}/{m}" for v in ("RTS", "R") for m in ("st_cnn_affine", "st_cnn_tps", "cnn")]
CASES = [{"cell": c, "threads": t} for t in (1, 2) for c in CELLS]
_MARK = "@@HEAP@@ "


IMPLS = ("main", "default_heap", "engine")


def worker(cell: str, threads: int, impl: str, warmup: int, steps: int) -> None:
    import bench_cpu_step
    import torch

    from torchstn.experiments.engine.config import resolve
    from torchstn.experiments.engine.config_io import load_config
    from torchstn.experiments.engine.steps import model_from_config
    from torchstn.nn import hold_freed_memory

    held = hold_freed_memory() if impl == "engine" else False
    torch.set_num_threads(threads)
    cfg = resolve(load_config(f"table1:{cell}"))
    size = 42 if cell.startswith("RTS") else 28
    torch.manual_seed(0)
    model = model_from_config(cfg, (1, size, size), 10)
    amp = cfg.run.amp
    if impl == "main":
        model, amp = bench_cpu_step.plain_convs(model), "off"
    g = torch.Generator().manual_seed(0)
    B = cfg.optim.batch_size
    x, y = torch.rand(B, 1, size, size, generator=g), torch.randint(0, 10, (B,), generator=g)
    step = bench_cpu_step.train_step(model, cfg, x, y, amp)  # the same step as the in-process benchmark
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    print(_MARK + json.dumps({"ms": statistics.median(times) * 1e3, "held": held, "amp": amp}), flush=True)


def sample(case: dict, impl: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = str(case["threads"])
    cmd = [sys.executable, __file__, "--worker", json.dumps({**case, "impl": impl})]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK) :])
    raise RuntimeError(f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    return tuple(statistics.quantiles(xs, n=4, method="inclusive")) if len(xs) > 1 else (xs[0],) * 3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds of the three processes per case")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps per process")
    p.add_argument("--steps", type=int, default=10, help="timed steps per process")
    p.add_argument("--only", default="", help="run only the cases whose cell contains this")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "heap.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        c = json.loads(args.worker)
        worker(c["cell"], c["threads"], c["impl"], args.warmup, args.steps)
        return
    rows, results = [], []
    for case in CASES:
        if args.only not in case["cell"]:
            continue
        ms: dict[str, list[float]] = {k: [] for k in IMPLS}
        amp = None
        for r in range(args.rounds):
            for impl in IMPLS[r % 3 :] + IMPLS[: r % 3]:
                got = sample(case, impl, args)
                if impl == "engine" and not got["held"]:
                    raise SystemExit("hold_freed_memory() did not apply here (no glibc?): nothing to compare")
                ms[impl].append(got["ms"])
                amp = got["amp"] if impl == "engine" else amp
        heap = quartiles([d / e for d, e in zip(ms["default_heap"], ms["engine"])])
        total = quartiles([m / e for m, e in zip(ms["main"], ms["engine"])])
        results.append({"case": case, "ms": ms, "heap": heap, "total": total, "amp": amp})
        med = {k: statistics.median(v) for k, v in ms.items()}
        rows.append(
            f"| {case['cell']} | {case['threads']} | {amp} | {med['main']:.1f} | {med['default_heap']:.1f} | "
            f"{med['engine']:.1f} | {heap[1]:.2f}x [{heap[0]:.2f}-{heap[2]:.2f}] | "
            f"**{total[1]:.2f}x** [{total[0]:.2f}-{total[2]:.2f}] |"
        )
    doc = {
        "command": "python benchmarks/bench_heap.py " + " ".join(sys.argv[1:]),
        "env": environment(),
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"Command: `{doc['command'].strip()}`; {args.rounds} rounds of fresh processes per case; load average "
        f"{doc['env']['loadavg']}"
    )
    print(
        "\n| cell | threads | engine amp | main, ms | engine, default heap, ms | engine, ms | held heap gives | "
        "engine vs main |\n|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
