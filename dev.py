#!/usr/bin/env python3
"""The project's two commands, on any machine with Python >= 3.10 and pip.

    python3 dev.py demo [--minutes M] [--out DIR]   # fetch MNIST, train an ST-CNN on distorted MNIST, report, draw
    python3 dev.py test [pytest args]               # the test suite (CI runs exactly this)

Each command creates ``.venv`` next to this file on first use and installs what it needs into it (torch pinned to
the build in requirements/constraints-dev.txt); later runs reuse it. Set TORCHSTN_VENV to use another folder.
Without ``--minutes`` the demo fits in 5 minutes from the command on, the venv's setup included.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("TORCHSTN_VENV", ROOT / ".venv"))
EXTRAS = {"demo": "experiments", "test": "dev"}
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
    key = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + constraints.read_bytes() + extra.encode()
    ).hexdigest()
    stamp = VENV / f".torchstn-installed-{extra}"
    if not stamp.exists() or stamp.read_text() != key:
        print(f"[dev.py] installing torchstn[{extra}] into {VENV}", flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(constraints), "-e", f"{ROOT}[{extra}]"],
                       check=True)
        stamp.write_text(key)
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    t0 = time.monotonic()
    py = _ensure_env(EXTRAS[command])
    if command == "demo":
        if not any(a == "--minutes" or a.startswith("--minutes=") for a in rest):
            # a first run spends part of the budget creating the venv: the demo gets what is left (at least 1 min)
            setup = time.monotonic() - t0
            minutes = max(1.0, DEMO_MINUTES - setup / 60)
            if setup > 5:
                print(f"[dev.py] setup took {setup:.0f} s; the demo gets the other {minutes:.1f} of its "
                      f"{DEMO_MINUTES:g} minutes (--minutes M to choose)", flush=True)
            rest = ["--minutes", f"{minutes:.2f}", *rest]
        cmd = [str(py), "-m", "torchstn", "demo", *rest]
    else:
        cmd = [str(py), "-m", "pytest", *rest]
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
