"""The machine side of the benchmark harness (:mod:`_common`): what a timing depends on (versions, threads, CPU,
allocator settings, load), the allocator re-exec, and waiting for a quiet machine before each timed repeat.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
#: Allocator settings: keep freed blocks in the heap instead of returning them to the OS (no mmap/munmap and page
#: faults for every large temporary), so the timings measure the kernels and not the kernel's page-fault handler.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
_NO_REEXEC = "TORCHSTN_BENCH_NO_REEXEC"


# -- environment -------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict:
    """What a timing depends on: versions, threads, CPU, allocator settings, load, date."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: None)()
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchstn": _version("torchstn"),
        "kornia": _version("kornia"),
        "commit": _commit(),
        "cpu_model": cpu_model(),
        "cpu_capability": cap,
        "logical_cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ.get(k) for k in (*MALLOC_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "loadavg": list(os.getloadavg()),
        "niceness": os.nice(0),
    }


def ensure_env(threads: int) -> None:
    """Re-exec this interpreter once with :data:`MALLOC_ENV` (and ``OMP_NUM_THREADS``) unless already set."""
    want = {**MALLOC_ENV, "OMP_NUM_THREADS": str(threads)}
    if os.environ.get(_NO_REEXEC) or all(os.environ.get(k) == v for k, v in want.items()):
        return
    env = {**os.environ, **want, _NO_REEXEC: "1"}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


# -- waiting for a quiet machine -----------------------------------------------------------------------------------
_GATE_LOG: list[dict] = []  # one entry per timed repeat of the current case


def _ticks() -> tuple[int, int, int]:
    """(busy jiffies of all CPUs, all jiffies, jiffies this process used) from /proc."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(fields) - idle, sum(fields), int(own[11]) + int(own[12])  # utime + stime of every thread


def others_busy(interval: float = 0.2) -> float | None:
    """Fraction of all CPUs that *other* processes kept busy over ``interval`` s (None without /proc)."""
    try:
        b0, t0, o0 = _ticks()
        time.sleep(interval)
        b1, t1, o1 = _ticks()
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, (b1 - b0) - (o1 - o0)) / max(t1 - t0, 1)


def wait_quiet(method) -> bool:
    """Before a repeat: wait up to ``method.max_wait`` s until others use at most ``method.quiet_below`` of the CPUs."""
    t0 = time.perf_counter()
    busy = others_busy()
    while busy is not None and busy > method.quiet_below and time.perf_counter() - t0 < method.max_wait:
        busy = others_busy()
    quiet = busy is None or busy <= method.quiet_below
    _GATE_LOG.append(
        {
            "others_busy": None if busy is None else round(busy, 3),
            "quiet": quiet,
            "waited_s": round(time.perf_counter() - t0, 2),
        }
    )
    return quiet


def gate_summary(log: list[dict]) -> dict:
    busy = [g["others_busy"] for g in log if g["others_busy"] is not None]
    return {
        "repeats": len(log),
        "quiet_repeats": sum(g["quiet"] for g in log),
        "waited_s": round(sum(g["waited_s"] for g in log), 1),
        "others_busy_max": max(busy, default=None),
        "per_repeat": log,
    }
