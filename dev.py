#!/usr/bin/env python3
"""The project's commands, on any machine with Python >= 3.10 and pip.

    python3 dev.py demo [--minutes M] [--out DIR]   # fetch MNIST, train an ST-CNN on distorted MNIST, report, draw
    python3 dev.py test [pytest args]               # the test suite (CI runs lint, then this)
    python3 dev.py lint [--fix]                     # formatter check, linter (ruff) and type checker (mypy)
    python3 dev.py test-torch VERSION [pytest args] # the test suite against torch==VERSION, in its own venv
    python3 dev.py gpu-check [--dry] [--out DIR]     # CUDA checks, timings and a paper-schedule cell (BENCHMARKS.md)

``demo``, ``test``, ``lint`` and ``gpu-check`` create ``.venv`` next to this file on first use and install what they need into it (torch
pinned to the build in requirements/constraints-dev.txt); later runs reuse it. Set TORCHSTN_VENV to use another
folder. Without ``--minutes`` the demo fits in 5 minutes from the command on, the venv's setup included.

``test-torch`` checks the range that pyproject.toml claims (``torch>=2.9``; tested on 2.9.0 and 2.15.0, the newest
on PyPI in December 2026: docs/versions.md). It creates ``.venv-torch-VERSION`` next to this file, installs
torch==VERSION and ``torchstn[dev]`` there and runs pytest with the given arguments. pip gets a constraints file
holding only ``torch==VERSION`` through PIP_CONSTRAINT, so nothing moves torch off VERSION, and it replaces any
constraint from the machine's pip configuration (which could veto VERSION). From PyPI a Linux torch is a CUDA build
that runs on the CPU: 2-4 GB to download, 5-7 GB in the venv; delete the folder when done.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("TORCHSTN_VENV", ROOT / ".venv"))
EXTRAS = {"demo": "experiments", "test": "dev", "lint": "dev", "gpu-check": "dev"}
#: What ``lint`` checks: the package, its tests and benchmarks, and this file (settings in pyproject.toml).
LINT_PATHS = ["src", "tests", "benchmarks", "dev.py", "docs/scripts"]
#: The demo's whole budget in minutes, setting up the venv included, unless ``--minutes`` is given.
DEMO_MINUTES = 5.0


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ensure_env(extra: str) -> Path:
    """Create the venv and install the package with ``extra``; skipped when nothing changed since last time."""
    py = _python()
    if not py.exists():
        print(f"[dev.py] creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    constraints = ROOT / "requirements" / "constraints-dev.txt"
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + constraints.read_bytes() + extra.encode()).hexdigest()
    stamp = VENV / f".torchstn-installed-{extra}"
    if not stamp.exists() or stamp.read_text() != key:
        print(f"[dev.py] installing torchstn[{extra}] into {VENV}", flush=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "-c", str(constraints), "-e", f"{ROOT}[{extra}]"], check=True
        )
        stamp.write_text(key)
    return py


def _torch_env(version: str) -> Path:
    """``.venv-torch-VERSION`` with torch==VERSION and ``torchstn[dev]``; skipped when nothing changed since then."""
    folder = ROOT / f".venv-torch-{version}"
    py = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not py.exists():
        print(f"[dev.py] creating virtual environment {folder}", flush=True)
        venv.EnvBuilder(with_pip=True).create(folder)
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + version.encode()).hexdigest()
    stamp = folder / ".torchstn-installed-dev"
    if not stamp.exists() or stamp.read_text() != key:
        pin = folder / "constraints.txt"
        pin.write_text(f"torch=={version}\n")
        print(
            f"[dev.py] installing torch=={version} and torchstn[dev] into {folder} (a CUDA build from PyPI "
            "is several GB)",
            flush=True,
        )
        t0 = time.monotonic()
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", f"torch=={version}", "-e", f"{ROOT}[dev]"],
            check=True,
            env={**os.environ, "PIP_CONSTRAINT": str(pin)},
        )
        print(f"[dev.py] installed in {time.monotonic() - t0:.0f} s", flush=True)
        stamp.write_text(key)
    return py


def _test_torch(argv: list[str]) -> int:
    """``test-torch VERSION [pytest args]``: the suite in ``.venv-torch-VERSION``, after checking which torch runs."""
    if not argv or not re.fullmatch(r"\d+\.\d+\.\d+", argv[0]):
        print("usage: python3 dev.py test-torch VERSION [pytest args]   (a release on PyPI, e.g. 2.15.0)")
        return 2
    version, rest = argv[0], argv[1:]
    try:
        py = _torch_env(version)
    except subprocess.CalledProcessError as e:
        print(
            f"[dev.py] pip could not install torch=={version} with torchstn[dev] (exit {e.returncode}): is it a "
            "release on PyPI for this Python, inside the torch range of pyproject.toml?"
        )
        return e.returncode or 1
    check = (
        "import sys, torch; v = torch.__version__.split('+')[0]; print('[dev.py] torch', torch.__version__,"
        " 'from', torch.__file__); sys.exit(v != sys.argv[1])"
    )
    if subprocess.run([str(py), "-c", check, version]).returncode:
        print(f"[dev.py] the venv's torch is not {version}: delete .venv-torch-{version} and run again")
        return 1
    return subprocess.run([str(py), "-m", "pytest", *rest], cwd=ROOT).returncode


def _lint(py: Path, argv: list[str]) -> int:
    """``lint [--fix]``: ``ruff format`` (check, or rewrite with ``--fix``), ``ruff check`` (with ``--fix``: the
    safe fixes) and ``mypy`` over the package; every step runs, the exit status is the first failure's."""
    fix = "--fix" in argv
    steps = [
        [str(py), "-m", "ruff", "format", *([] if fix else ["--check"]), *LINT_PATHS],
        [str(py), "-m", "ruff", "check", *(["--fix"] if fix else []), *LINT_PATHS],
        [str(py), "-m", "mypy", "src/torchstn"],
    ]
    codes = []
    for cmd in steps:
        print(f"[dev.py] {' '.join(cmd[2:])}", flush=True)
        codes.append(subprocess.run(cmd, cwd=ROOT).returncode)
    return next((c for c in codes if c), 0)


def main(argv: list[str]) -> int:
    if argv[:1] == ["test-torch"]:
        return _test_torch(argv[1:])
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    t0 = time.monotonic()
    py = _ensure_env(EXTRAS[command])
    if command == "lint":
        return _lint(py, rest)
    if command == "demo":
        if not any(a == "--minutes" or a.startswith("--minutes=") for a in rest):
            # a first run spends part of the budget creating the venv: the demo gets what is left (at least 1 min)
            setup = time.monotonic() - t0
            minutes = max(1.0, DEMO_MINUTES - setup / 60)
            if setup > 5:
                print(
                    f"[dev.py] setup took {setup:.0f} s; the demo gets the other {minutes:.1f} of its "
                    f"{DEMO_MINUTES:g} minutes (--minutes M to choose)",
                    flush=True,
                )
            rest = ["--minutes", f"{minutes:.2f}", *rest]
        cmd = [str(py), "-m", "torchstn", "demo", *rest]
    elif command == "gpu-check":  # its part 1 runs pytest: the dev extra
        cmd = [str(py), str(ROOT / "benchmarks" / "gpu_check.py"), *rest]
    else:
        cmd = [str(py), "-m", "pytest", *rest]
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
