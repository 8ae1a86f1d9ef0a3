"""Shared timing harness for the benchmarks (the method is written down in ``benchmarks/README.md``).

A benchmark script defines a list of *cases* (JSON-serialisable dicts) and a ``run_case(case, method)`` function that
builds the tensors of one case and times its implementations with :func:`time_interleaved`. :func:`main` then

1. re-executes the interpreter with the allocator environment of :data:`MALLOC_ENV` set (glibc reads it at start-up
   only, so setting it from Python after start is too late),
2. runs every case in a fresh subprocess (``--in-process`` runs them in this process instead),
3. records the environment (torch / kornia versions, thread counts, CPU model, load average, date, commit),
4. writes ``benchmarks/results/<name>.json`` and prints the Markdown tables the script renders from it.

Timing: every implementation of a case is warmed up, then timed ``repeats`` times, interleaved (repeat ``r`` runs the
implementations in an order rotated by ``r``), so load from other processes hits all of them alike. One *sample* is
``number`` back-to-back calls divided by ``number``, with ``number`` chosen from the warm-up so a sample lasts at
least ``min_time`` seconds. We report the median and the inter-quartile range of the samples, and for a pair of
implementations the median (and IQR) of the per-repeat ratios, which cancels load that drifts slowly. Before each
repeat the harness waits (at most ``max_wait`` s) until other processes use at most ``quiet_below`` of the CPUs, and
records for every repeat whether it started quiet: on a shared 2-core machine a busy sibling core stalls every
parallel region of a 2-thread kernel, which no amount of interleaving cancels.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from _machine import _GATE_LOG, BENCH_DIR, MALLOC_ENV, ensure_env, environment, gate_summary, wait_quiet  # noqa: F401

RESULTS_DIR = BENCH_DIR / "results"
_WORKER_MARK = "@@BENCH_RESULT@@ "


@dataclass(frozen=True)
class Method:
    """How each case is timed (saved with every result)."""

    warmup: int = 5
    repeats: int = 30
    min_time: float = 0.005  # seconds per sample
    threads: int = 2
    fresh_process: bool = True
    quiet_below: float = 0.25  # before each repeat wait until other processes use at most this fraction of the CPUs
    max_wait: float = 30.0  # ... but at most this many seconds (the repeat is then marked busy)
    nice: int = 0  # niceness change of the benchmark processes (negative: scheduled ahead of other jobs; root only)
    until_quiet: float = 0.0  # > 0: add repeats until `repeats` started quiet (or this many s); stats use those


# -- statistics --------------------------------------------------------------------------------------------------
def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    return tuple(statistics.quantiles(xs, n=4, method="inclusive")) if len(xs) > 1 else (xs[0],) * 3


def summarise(times_s: list[float], number: int, quiet: list[bool] | None = None) -> dict:
    """Median, quartiles, IQR, min and mean of per-call times (seconds in, milliseconds out).

    ``samples_ms`` keeps every sample in repeat order. With a ``quiet`` mask (one flag per repeat) the statistics use
    the quiet repeats only (``over: "quiet"``), unless fewer than :func:`min_quiet` of them exist (``over: "all"``).
    """
    ms = [t * 1e3 for t in times_s]
    use = ms
    over = "all"
    if quiet is not None and sum(quiet) >= min_quiet(len(ms)):
        use, over = [t for t, q in zip(ms, quiet) if q], "quiet"
    q1, med, q3 = _quartiles(use)
    return {
        "median_ms": med,
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "min_ms": min(use),
        "mean_ms": statistics.fmean(use),
        "n": len(use),
        "number": number,
        "over": over,
        "n_all": len(ms),
        "samples_ms": [round(t, 5) for t in ms],
        **({"quiet": list(quiet)} if quiet is not None else {}),
    }


def min_quiet(n: int) -> int:
    """Quiet repeats needed before statistics ignore the busy ones."""
    return min(n, max(5, n // 3))


def paired_ratio(stats: dict, slow: str, fast: str) -> dict:
    """Speed-up of ``fast`` over ``slow``: ratio of medians and median / quartiles of the per-repeat ratios (over the
    same repeats as the statistics: the quiet ones where those were used)."""
    a, b = stats[slow]["samples_ms"], stats[fast]["samples_ms"]
    keep = stats[slow].get("quiet") if stats[slow].get("over") == "quiet" else None
    per = [x / y for i, (x, y) in enumerate(zip(a, b)) if keep is None or keep[i]]
    q1, med, q3 = _quartiles(per)
    return {
        "of_medians": stats[slow]["median_ms"] / stats[fast]["median_ms"],
        "paired_median": med,
        "paired_q1": q1,
        "paired_q3": q3,
        "n": len(per),
    }


def paired_diff(stats: dict, a: str, b: str) -> float:
    """Median over repeats of ``a - b`` in ms (e.g. forward+backward minus forward of the same repeat), over the
    repeats the statistics use."""
    keep = stats[a].get("quiet") if stats[a].get("over") == "quiet" else None
    diffs = [
        x - y for i, (x, y) in enumerate(zip(stats[a]["samples_ms"], stats[b]["samples_ms"])) if keep is None or keep[i]
    ]
    return statistics.median(diffs)


# -- timing ------------------------------------------------------------------------------------------------------
def time_interleaved(fns: dict[str, Callable[[], object]], method: Method) -> dict[str, dict]:
    """Time every callable of ``fns`` as described in the module docstring; returns ``{name: summarise(...)}``.

    With ``method.until_quiet > 0`` repeats go on until ``method.repeats`` of them started quiet, or until at least
    ``method.repeats`` ran and ``until_quiet`` seconds have passed; the statistics then use the quiet repeats.
    """
    names = list(fns)
    warm: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(max(1, method.warmup)):
        for k in names:
            t0 = time.perf_counter()
            fns[k]()
            warm[k].append(time.perf_counter() - t0)
    number = {k: max(1, math.ceil(method.min_time / max(statistics.median(warm[k]), 1e-9))) for k in names}
    times: dict[str, list[float]] = {k: [] for k in names}
    quiet: list[bool] = []
    deadline = time.perf_counter() + method.until_quiet
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        r = 0
        while True:
            quiet.append(wait_quiet(method) if method.quiet_below < 1.0 else True)
            shift = r % len(names)
            for k in names[shift:] + names[:shift]:
                fn, n = fns[k], number[k]
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times[k].append((time.perf_counter() - t0) / n)
            r += 1
            if method.until_quiet <= 0:
                if r >= method.repeats:
                    break
            elif sum(quiet) >= method.repeats or (r >= method.repeats and time.perf_counter() > deadline):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    mask = quiet if method.until_quiet > 0 else None
    return {k: summarise(times[k], number[k], mask) for k in names}


# -- running cases -----------------------------------------------------------------------------------------------
def case_id(case: dict) -> str:
    return "/".join(str(v) for v in case.values())


def _worker(payload: str, run_case: Callable[[dict, Method], dict]) -> None:
    import torch

    msg = json.loads(payload)
    method = Method(**msg["method"])
    torch.set_num_threads(method.threads)
    load0 = list(os.getloadavg())
    _GATE_LOG.clear()
    result = run_case(msg["case"], method)
    result["gate"] = gate_summary(_GATE_LOG)
    result["process"] = {
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
        "niceness": os.nice(0),
        "loadavg_before": load0,
        "loadavg_after": list(os.getloadavg()),
    }
    print(_WORKER_MARK + json.dumps(result), flush=True)


def _run_in_subprocess(script: str, case: dict, method: Method) -> dict:
    payload = json.dumps({"case": case, "method": asdict(method)})
    proc = subprocess.run([sys.executable, script, "--worker", payload], capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    for line in proc.stdout.splitlines():
        if line.startswith(_WORKER_MARK):
            return json.loads(line[len(_WORKER_MARK) :])
    raise RuntimeError(f"case {case_id(case)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def parser(description: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    d = Method()
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed samples per implementation")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed calls per implementation first")
    p.add_argument("--min-time", type=float, default=d.min_time, help="seconds per sample (sets calls per sample)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch.set_num_threads in every case")
    p.add_argument("--in-process", action="store_true", help="run all cases in this process (default: fresh ones)")
    p.add_argument(
        "--quiet-below",
        type=float,
        default=d.quiet_below,
        metavar="FRACTION",
        help="before each repeat wait until other processes keep at most this fraction of the CPUs busy "
        "(1 disables waiting)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=d.max_wait,
        metavar="S",
        help="give up waiting for a quiet machine after S seconds per repeat (the repeat is marked)",
    )
    p.add_argument(
        "--until-quiet",
        type=float,
        default=d.until_quiet,
        metavar="S",
        help="keep adding repeats until --repeats of them started quiet (at most S s per case, then as many "
        "as ran); the statistics then use the quiet repeats only. 0: exactly --repeats repeats",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="change the niceness of the benchmark processes by N (e.g. -10 on a shared box; needs root)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help="run only the case with this id, or else the cases whose id contains it (repeatable)",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="where to write the JSON")
    p.add_argument("--no-save", action="store_true", help="print the tables but do not write the JSON")
    p.add_argument(
        "--merge",
        action="store_true",
        help="replace only the cases run now in an existing --out file (e.g. rerun cases that ran busy)",
    )
    p.add_argument("--render", type=Path, metavar="JSON", help="only print the Markdown tables of a results file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(
    name: str,
    description: str,
    cases: list[dict],
    run_case: Callable[[dict, Method], dict],
    render: Callable[[dict], str],
    argv: list[str] | None = None,
) -> dict | None:
    """Entry point shared by the benchmark scripts (see the module docstring)."""
    args = parser(description, name).parse_args(argv)
    if args.worker is not None:
        _worker(args.worker, run_case)
        return None
    if args.render is not None:
        print(render(json.loads(args.render.read_text())))
        return None
    ensure_env(args.threads)
    import torch

    method = Method(
        args.warmup,
        args.repeats,
        args.min_time,
        args.threads,
        not args.in_process,
        args.quiet_below,
        args.max_wait,
        args.nice,
        args.until_quiet,
    )
    if method.nice:
        os.nice(method.nice)  # inherited by the case subprocesses
    torch.set_num_threads(method.threads)
    ids = [case_id(c) for c in cases]
    selected = [
        c for c, i in zip(cases, ids) if not args.only or any(t == i or (t not in ids and t in i) for t in args.only)
    ]
    script = str(Path(sys.argv[0]).resolve())
    doc = {
        "benchmark": name,
        "command": " ".join(["python", os.path.relpath(script, BENCH_DIR.parent), *sys.argv[1:]]),
        "method": asdict(method),
        "environment": environment(),
        "cases": [],
    }
    for case in selected:
        t0 = time.perf_counter()
        if method.fresh_process:
            res = _run_in_subprocess(script, case, method)
        else:
            _GATE_LOG.clear()
            res = run_case(case, method)
            res["gate"] = gate_summary(_GATE_LOG)
        res["case"] = case
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        doc["cases"].append(res)
        g = res["gate"]
        print(
            f"[{name}] {case_id(case)}: {res['wall_s']} s, {g['quiet_repeats']}/{g['repeats']} repeats quiet, "
            f"waited {g['waited_s']} s",
            file=sys.stderr,
            flush=True,
        )
    doc["environment"]["loadavg_end"] = list(os.getloadavg())
    if args.merge and args.out.exists():
        doc = merge(json.loads(args.out.read_text()), doc, cases)
    if not args.no_save:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"[{name}] wrote {args.out}", file=sys.stderr)
    print(render(doc))
    return doc


def merge(old: dict, new: dict, cases: list[dict]) -> dict:
    """``new`` with the cases of ``old`` it did not rerun; ``runs`` lists every run and each case says which it is."""

    def run_of(doc: dict) -> dict:
        return {k: doc[k] for k in ("command", "method", "environment")}

    runs = old.get("runs") or [run_of(old)]
    for res in old["cases"]:
        res.setdefault("run", 0)
    for res in new["cases"]:
        res["run"] = len(runs)
    runs = [*runs, run_of(new)]
    by_case = {json.dumps(r["case"], sort_keys=True): r for r in (*old["cases"], *new["cases"])}
    order = [json.dumps(c, sort_keys=True) for c in cases]
    merged = [by_case.pop(k) for k in order if k in by_case] + list(by_case.values())
    used = sorted({r["run"] for r in merged})
    keep = {i: j for j, i in enumerate(used)}  # drop runs no case comes from any more
    for r in merged:
        r["run"] = keep[r["run"]]
    runs = [runs[i] for i in used]
    return {**new, "command": " && ".join(r["command"] for r in runs), "cases": merged, "runs": runs}


# -- Markdown ----------------------------------------------------------------------------------------------------
def fmt_ms(s: dict) -> str:
    """``median [IQR]`` with precision that suits the magnitude."""
    m, iqr = s["median_ms"], s["iqr_ms"]
    digits = 3 if m < 1 else 2 if m < 100 else 1
    return f"{m:.{digits}f} [{iqr:.{digits}f}]"


def fmt_ratio(r: dict) -> str:
    return f"{r['paired_median']:.2f}x [{r['paired_q1']:.2f}-{r['paired_q3']:.2f}]"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def env_line(doc: dict) -> str:
    """One paragraph with everything a reader needs to judge the numbers of ``doc``."""
    e, m = doc["environment"], doc["method"]
    mode = "a fresh process per case" if m["fresh_process"] else "one process"
    gates = [c["gate"] for c in doc["cases"] if "gate" in c]
    quiet, total = sum(g["quiet_repeats"] for g in gates), sum(g["repeats"] for g in gates)
    load = (
        (
            f"{quiet} of {total} repeats started with other processes using <= {m['quiet_below']:.0%} of the CPUs "
            f"(waited up to {m['max_wait']:g} s for that before each repeat)"
        )
        if total
        else "load not watched"
    )
    runs = doc.get("runs", [])
    if m.get("until_quiet", 0) > 0:
        want = "the run's sample count" if len(runs) > 1 else str(m["repeats"])
        load += (
            f"; repeats were added until {want} per case started quiet (at most {m['until_quiet']:g} s), "
            "statistics over the quiet repeats"
        )
    if len(runs) > 1:  # a merged file: say which run (and so which method and date) each case comes from
        parts = []
        for i, r in enumerate(runs):
            ids = ", ".join(case_id(c["case"]) for c in doc["cases"] if c.get("run") == i)
            parts.append(
                f"run {i + 1} ({r['environment']['date_utc']}, {r['method']['repeats']} samples, commit "
                f"{(r['environment']['commit'] or 'unknown')[:10]}): {ids}"
            )
        when = "merged runs: " + "; ".join(parts)
        samples = f"{m['warmup']} warm-ups + interleaved samples of >= {m['min_time'] * 1e3:g} ms"
    else:
        when = f"{e['date_utc']}, commit {(e['commit'] or 'unknown')[:10]}"
        samples = f"{m['warmup']} warm-ups + {m['repeats']} interleaved samples of >= {m['min_time'] * 1e3:g} ms"
    return (
        f"torch {e['torch']}, kornia {e['kornia'] or 'not installed'}, Python {e['python']}; CPU {e['cpu_model']} "
        f"({e['cpu_capability']}, {e['cpus_usable']} usable cores), {m['threads']} torch threads; {samples}, "
        f"{mode}, niceness {e.get('niceness', 0)}; {load}; {when}."
    )
