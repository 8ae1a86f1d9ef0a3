"""The first run on a GPU, in one command that fits a lease: CUDA correctness, timings, and one paper-schedule cell.

Parts, in order (each in ``benchmarks/gpu/``; ``--parts`` picks some):

1. ``cuda_tests``: the suite's CUDA test cases (every test id with ``cuda`` in it), pass / fail lists;
2. ``parity``: every transform family's grid and every sampler option (modes, padding modes, align_corners, the
   anti-aliased and the deterministic sampler, 2D and 3D), forward and gradients, float64 / float32 / bfloat16 /
   float16, on the device against the CPU and float64; ``determinism``: bitwise-equal backward passes under
   ``torch.use_deterministic_algorithms(True)``; ``compiled``: ``torch.compile`` against eager; ``amp``: fp16
   training with the gradient scaler against fp32;
3. ``timings``: our affine ST step against ``F.affine_grid`` + ``F.grid_sample``, the sampler's bandwidth against a
   device-to-device copy, the TPS grid, a Table 1 training step in images/s (fp32, bf16, compiled, CUDA graphs);
4. ``paper_cell``: Table 1's RTS ST-CNN (affine) on the paper's schedule with the time left, checkpointed so the
   next lease resumes it (``--resume-from``).

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` after every part (a killed run keeps what finished) and
exits 1 if a part failed. ``--dry`` runs every part on the CPU at tiny sizes in well under a minute
(``tests/benchmarks/test_gpu_check.py``), so that a lease is not spent on a typo.

Run (BENCHMARKS.md, "GPU check"): ``PYTHONPATH=src python3 benchmarks/gpu_check.py --out DIR [--mnist DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# cuBLAS is deterministic only with a fixed workspace, set before CUDA starts (the determinism part needs it)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:  # installed (pip install -e ., dev.py), or on PYTHONPATH
    import torchstn  # noqa: F401
except ImportError:  # a checkout on a machine where nothing is installed (a lent GPU): its own src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from gpu import amp, compiled, cuda_tests, determinism, paper_cell, parity, timings  # noqa: E402
from gpu.report import DRY, REAL, Context, Report, sizes_dict  # noqa: E402

#: name -> (run, seconds that must be left to start it, in the real run)
PARTS = {
    "cuda_tests": (cuda_tests.run, 60.0),
    "parity": (parity.run, 30.0),
    "determinism": (determinism.run, 20.0),
    "compiled": (compiled.run, 60.0),
    "amp": (amp.run, 30.0),
    "timings": (timings.run, 90.0),
    "paper_cell": (paper_cell.run, 60.0),
}


class BreakPart(RuntimeError):
    """Raised inside the part named by ``--break-part`` (the test of the report's error handling)."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="every part on the CPU at tiny sizes (seconds, not minutes)")
    p.add_argument("--out", type=Path, default=Path("gpu_check"), help="folder of the report (default ./gpu_check)")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="wall time of the whole run (default 8)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu (dry: always cpu)")
    p.add_argument("--mnist", help="folder with the MNIST IDX files for the paper cell (default: torchstn's cache)")
    p.add_argument("--run-dir", help="the paper cell's run folder (default: OUT/rts_st_cnn_affine)")
    p.add_argument("--resume-from", help="an earlier lease's paper-cell run folder to continue from")
    p.add_argument("--break-part", metavar="PART", help="raise inside PART (checks that a failed part is reported)")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The options, checked: an unknown part or a budget that is not positive exits with a one-line error (2)."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts + ([args.break_part] if args.break_part else []) if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; the parts are {','.join(PARTS)}")
    if not args.budget_minutes > 0:
        parser.error(f"--budget-minutes must be positive, got {args.budget_minutes:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    args = parse(argv)
    device = torch.device("cpu" if args.dry else args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not args.dry and device.type != "cuda":
        print("[gpu_check] no CUDA device: the real run needs one (use --dry to check the script on a CPU)")
        return 2
    if args.dry:
        torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    budget = args.budget_minutes * 60
    report = Report(args.out, " ".join(["python", *sys.argv]), args.dry, device, budget)
    report.doc["sizes"] = sizes_dict(DRY if args.dry else REAL)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        ctx = Context(
            device=device,
            dry=args.dry,
            sizes=DRY if args.dry else REAL,
            out=args.out,
            scratch=Path(scratch),
            deadline=t0 + budget,
            options={"mnist": args.mnist, "run_dir": args.run_dir, "resume_from": args.resume_from},
        )
        for name in args.parts:
            part, min_s = PARTS[name]
            if name == args.break_part:
                part = _broken(name)
            t_part = time.monotonic()
            entry = report.run(name, part, ctx, min_seconds=0.0 if args.dry else min_s)
            print(f"[gpu_check] {name}: {entry['status']} in {time.monotonic() - t_part:.1f} s", flush=True)
    print(f"[gpu_check] wrote {report.json_path} and {report.md_path} ({time.monotonic() - t0:.0f} s)")
    return 0 if report.ok() else 1


def _broken(name: str):
    def part(ctx: Context) -> dict:
        ctx.checks.add("ran up to the planted error", True)
        raise BreakPart(f"--break-part {name}")

    return part


if __name__ == "__main__":
    sys.exit(main())
