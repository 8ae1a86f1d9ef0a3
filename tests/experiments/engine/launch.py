"""Starting real multi-process runs from a test: ``torchrun`` on a free local port, with this checkout's source and
``tests`` importable (shared by the engine's and the experiments' DDP tests)."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torchstn

REPO = Path(__file__).resolve().parents[3]
SRC = Path(torchstn.__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 180) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``torchrun --nproc_per_node=NPROC ARGS`` (one thread per process) from the repository root; returns the
    finished process (output captured as text) and its wall time in seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), str(REPO)]))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        *args,
    ]
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return proc, time.monotonic() - t
