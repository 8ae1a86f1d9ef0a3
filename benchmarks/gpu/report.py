"""The GPU check's report and the context every part runs in.

The report is one JSON file and its Markdown rendering, both rewritten atomically (:func:`torchstn._io.write_text_atomic`)
when a part starts and when it ends, so a run killed at its time limit still leaves every finished part, and names
the part it was in. A part is a function ``part(ctx) -> dict``; what it returns is kept under ``data``, its
:class:`Checks` decide ``ok`` / ``failed``, and an exception is kept as ``error`` with its traceback (the next
part still runs).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from torchstn._io import write_text_atomic


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: :data:`REAL` fills a GPU for the timings; :data:`DRY` runs every line on a CPU in seconds."""

    batch: int  # parity and determinism batch
    image: tuple[int, int]  # parity input (H, W); outputs are a little smaller
    volume: tuple[int, int, int]  # parity input (D, H, W)
    train_steps: int  # fp16 / fp32 engine runs
    train_batch: int
    synthetic: int  # synthetic digits of those runs
    affine_batch: int  # the affine ST step timing (42x42 images) and the training step's batch
    bandwidth: tuple[int, int, int, int]  # (B, C, H, W) of the sampler bandwidth case
    copy_bytes: int  # the device-to-device copy
    tps_batch: int  # TPS grid (K=16) at 224x224 / 8
    tps_size: tuple[int, int]
    warmup: int
    repeats: int
    compile_backend: str


REAL = Sizes(
    batch=8,
    image=(64, 80),
    volume=(16, 20, 24),
    train_steps=300,
    train_batch=256,
    synthetic=6000,
    affine_batch=256,
    bandwidth=(64, 32, 128, 128),
    copy_bytes=1 << 30,
    tps_batch=64,
    tps_size=(224, 224),
    warmup=5,
    repeats=20,
    compile_backend="inductor",
)
DRY = Sizes(
    batch=2,
    image=(6, 7),
    volume=(3, 4, 5),
    train_steps=6,
    train_batch=8,
    synthetic=60,
    affine_batch=4,
    bandwidth=(2, 2, 8, 8),
    copy_bytes=1 << 16,
    tps_batch=2,
    tps_size=(8, 8),
    warmup=1,
    repeats=3,
    compile_backend="aot_eager",  # the same dynamo trace without inductor's C++ build, which takes minutes on a CPU
)


class Checks:
    """The pass/fail lines of one part: ``add(name, ok, **values)``; the part fails if one of them does."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name: str, ok: bool, **values) -> bool:
        self.rows.append({"name": name, "ok": bool(ok), **{k: _plain(v) for k, v in values.items()}})
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [r["name"] for r in self.rows if not r["ok"]]


def _plain(v):
    """JSON-friendly: floats rounded to 4 significant digits, tensors to numbers, the rest as given."""
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float):
        return float(f"{v:.4g}")
    return v


@dataclass
class Context:
    """What a part needs: the device, the sizes, where to write, the clock."""

    device: torch.device
    dry: bool
    sizes: Sizes
    out: Path  # the report's folder (what comes back from a device machine)
    scratch: Path  # files nobody needs afterwards (pytest's XML, the amp runs)
    deadline: float  # time.monotonic() by which the whole script must be done
    options: dict = field(default_factory=dict)  # the command-line options parts read (mnist, run_dir, ...)
    checks: Checks = field(default_factory=Checks)

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Report:
    """The report of one run: ``run(name, part, ctx)`` each part, in order; the files are always up to date."""

    def __init__(self, out: Path, command: str, dry: bool, device: torch.device, budget_s: float):
        self.json_path, self.md_path = out / "gpu_check.json", out / "gpu_check.md"
        self.t0 = time.monotonic()
        self.doc: dict = {
            "command": command,
            "dry": dry,
            "budget_s": budget_s,
            "device": device_info(device),
            "environment": environment(),
            "parts": {},
        }

    def run(self, name: str, part: Callable[[Context], dict], ctx: Context, *, min_seconds: float = 0.0) -> dict:
        """Run ``part`` and record it; skipped (and said so) when fewer than ``min_seconds`` are left."""
        if ctx.seconds_left() < min_seconds:
            return self._set(
                name, status="skipped", wall_s=0.0, why=f"{ctx.seconds_left():.0f} s left, needs {min_seconds:.0f}"
            )
        self._set(name, status="running")
        ctx.checks = Checks()
        t0 = time.monotonic()
        try:
            data = part(ctx)
            failed = ctx.checks.failed
            entry = {"status": "failed" if failed else "ok", "failed_checks": failed, "data": data}
        except Exception:  # a part's error is its result: record it, then go on with the next part
            entry = {"status": "error", "error": traceback.format_exc(limit=12)}
        entry.update(wall_s=round(time.monotonic() - t0, 2), checks=ctx.checks.rows)
        return self._set(name, **entry)

    def _set(self, name: str, **entry) -> dict:
        self.doc["parts"][name] = entry
        self.doc["wall_s"] = round(time.monotonic() - self.t0, 2)
        self.write()
        return entry

    def ok(self) -> bool:
        return all(p["status"] == "ok" for p in self.doc["parts"].values())

    def write(self) -> None:
        write_text_atomic(self.json_path, json.dumps(self.doc, indent=1) + "\n")
        write_text_atomic(self.md_path, render(self.doc))


def render(doc: dict) -> str:
    """The report as Markdown: the machine, then per part its status, wall time, summary and failed checks."""
    d, e = doc["device"], doc["environment"]
    lines = [
        "# GPU check" + (" (dry run: the CPU stands in for the GPU, tiny sizes)" if doc["dry"] else ""),
        "",
        f"Command: `{doc['command']}`  ",
        f"Device: {d['name']} ({d.get('capability', 'n/a')}, {d.get('memory_gib', 'n/a')} GiB); torch {e['torch']}, "
        f"CUDA {e['cuda'] or 'none'}, cuDNN {e['cudnn'] or 'none'}, driver {d.get('driver', 'n/a')}; Python "
        f"{e['python']}; commit {(e['commit'] or 'unknown')[:10]}; {e['date_utc']}.  ",
        f"Wall time {doc.get('wall_s', 0):.1f} s of a {doc['budget_s']:.0f} s budget.",
        "",
        "| part | status | wall s | checks passed | summary |",
        "|---|---|---|---|---|",
    ]
    for name, p in doc["parts"].items():
        checks = p.get("checks", [])
        passed = f"{sum(c['ok'] for c in checks)}/{len(checks)}" if checks else "-"
        summary = (p.get("data") or {}).get("summary", p.get("why", ""))
        lines.append(f"| {name} | {p['status']} | {p.get('wall_s', '')} | {passed} | {summary} |")
    for name, p in doc["parts"].items():
        failed = [c for c in p.get("checks", []) if not c["ok"]]
        if failed or p.get("error") or (p.get("data") or {}).get("table"):
            lines += ["", f"## {name}", ""]
        if p.get("error"):
            lines += ["```", p["error"].rstrip(), "```"]
        for c in failed:
            lines.append(
                f"- FAILED {c['name']}: " + ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("name", "ok"))
            )
        table = (p.get("data") or {}).get("table")
        if table:
            lines += ["", "| " + " | ".join(table["headers"]) + " |", "|" + "---|" * len(table["headers"])]
            lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"name": f"CPU {platform.processor() or platform.machine()} (no CUDA)", "type": device.type}
    p = torch.cuda.get_device_properties(device)
    return {
        "name": p.name,
        "type": "cuda",
        "capability": f"sm_{p.major}{p.minor}",
        "memory_gib": round(p.total_memory / 2**30, 1),
        "multiprocessors": p.multi_processor_count,
        "driver": _nvidia_smi("driver_version"),
        "clocks_sm_mhz": _nvidia_smi("clocks.sm"),
    }


def _nvidia_smi(query: str) -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment() -> dict:
    """Versions and threads (the benchmarks' :func:`_machine.environment`) plus CUDA's and cuDNN's versions."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _machine import environment as machine

    env = machine()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    import torchstn

    return {
        **env,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torchstn_path": torchstn.__file__,
        "argv": sys.argv,
    }


def sizes_dict(sizes: Sizes) -> dict:
    return asdict(sizes)
