"""Part 1: the suite's CUDA test cases (every test whose id names ``cuda``; they skip on a machine without CUDA).

pytest runs in a subprocess with a JUnit XML report, which this module reads back into pass / fail / skip lists.
In the dry run the selection is the CPU twins of one CUDA test file's cases (they pass on the CPU, the CUDA ones
skip), so the parsing and the bookkeeping run on real outcomes; the GPU's own selection is collected, not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torchstn
from gpu.report import Context

ROOT = Path(__file__).resolve().parents[2]
#: pytest's selection on a GPU: every test id with "cuda" in it, over the whole suite (``testpaths``)
REAL_ARGS = ["-k", "cuda", "--continue-on-collection-errors"]
DRY_ARGS = ["tests/functional/test_deterministic.py", "-k", "bitwise or chosen_automatically"]
#: test cases that skip where CUDA *is* available (they check the error a CPU-only torch gives)
NOT_FOR_CUDA = ("without_cuda",)


def outcomes(xml_path: Path) -> dict[str, list[str]]:
    """``{"passed": [...], "failed": [...], "error": [...], "skipped": [...]}`` of test ids from a JUnit XML file."""
    found: dict[str, list[str]] = {"passed": [], "failed": [], "error": [], "skipped": []}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        test_id = f"{module}.py::{case.get('name')}"
        kinds = {child.tag for child in case}
        kind = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        found[{"failure": "failed"}.get(kind, kind)].append(test_id)
    return found


def _pytest(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    # the torchstn this process imports, also where it is not installed (PYTHONPATH=src, or gpu_check's fallback)
    src = str(Path(torchstn.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-3000:]
        raise TimeoutError(f"pytest {' '.join(args)} ran past {timeout:.0f} s; its output ended with:\n{tail!r}") from e


def run(ctx: Context) -> dict:
    xml_path = ctx.scratch / "cuda_tests.xml"
    args = [f"--junitxml={xml_path}", *(DRY_ARGS if ctx.dry else REAL_ARGS)]
    timeout = max(30.0, min(240.0, ctx.seconds_left() - 60))
    proc = _pytest(args, timeout)
    tail = proc.stdout[-3000:]
    if not xml_path.exists():
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}):\n{tail}\n{proc.stderr[-2000:]}")
    found = outcomes(xml_path)
    c = ctx.checks
    c.add("pytest ran", proc.returncode in (0, 1), exit=proc.returncode)
    c.add(
        "some cases ran",
        bool(found["passed"] or found["failed"] or found["error"]),
        **{k: len(v) for k, v in found.items()},
    )
    for test_id in found["failed"] + found["error"]:
        c.add(test_id, False)
    if ctx.device.type == "cuda":  # on a GPU a CUDA case must not skip
        for test_id in found["skipped"]:
            if not any(s in test_id for s in NOT_FOR_CUDA):
                c.add(f"skipped on a GPU: {test_id}", False)
    counts = {k: len(v) for k, v in found.items()}
    if ctx.dry:  # the GPU's selection, collected only: a typo in it must not cost a lease
        ids = [t for t in _pytest([*REAL_ARGS, "--collect-only"], timeout).stdout.splitlines() if "::" in t]
        c.add("the GPU selection collects CUDA cases", bool(ids) and all("cuda" in t for t in ids), collected=len(ids))
        found["gpu_selection"] = ids
    return {
        "summary": ", ".join(f"{n} {k}" for k, n in counts.items()),
        "command": "pytest " + " ".join(args),
        "counts": counts,
        **found,
        "pytest_tail": tail,
    }
