"""``benchmarks/gpu_check.py`` in its dry mode: every part runs on the CPU at tiny sizes, so that a GPU lease is not
spent on a typo. The script runs as a user runs it, in a subprocess; the report it leaves is what is checked."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchstn

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PARTS = ["cuda_tests", "parity", "determinism", "compiled", "amp", "timings", "paper_cell"]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run's expectations are a CPU machine's")


def run_check(out: Path, *args: str) -> tuple[int, dict, str]:
    src = str(Path(torchstn.__file__).resolve().parents[1])  # the torchstn under test
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry", "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    report = out / "gpu_check.json"
    assert report.exists(), proc.stdout + proc.stderr
    return proc.returncode, json.loads(report.read_text()), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    code, doc, log = run_check(out)
    return out, code, doc, log


@pytest.mark.slow
def test_every_part_runs_and_passes(dry):
    out, code, doc, log = dry
    assert code == 0, log
    assert list(doc["parts"]) == PARTS
    for name, part in doc["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("failed_checks"))
        assert part["checks"] and all(c["ok"] for c in part["checks"]), name
        assert part["data"]["summary"] and part["wall_s"] > 0, name
    assert doc["dry"] and doc["device"]["type"] == "cpu" and doc["environment"]["torch"] == torch.__version__
    md = (out / "gpu_check.md").read_text()
    assert all(f"| {name} | ok |" in md for name in PARTS)


@pytest.mark.slow
def test_parts_hold_real_content(dry):
    out, _, doc, _ = dry
    p = {k: v["data"] for k, v in doc["parts"].items()}
    tests = p["cuda_tests"]
    assert tests["passed"] and all("cpu" in t for t in tests["passed"])  # the CPU twins ran
    assert tests["skipped"] and all("cuda" in t for t in tests["skipped"])  # and the CUDA cases skipped here
    assert len(tests["gpu_selection"]) >= 31  # what a GPU runs: every CUDA case of the suite
    parity = p["parity"]["errors"]
    for family in torchstn.list_transforms():
        assert f"grid {family} align_corners=False" in parity
    for key in ("sample 2D bicubic reflection align_corners=True", "sample 3D nearest fill deterministic=True"):
        assert set(parity[key]) == {"float64", "float32", "bfloat16", "float16"}
    assert "sample 2D antialias zeros" in parity and parity["grid affine align_corners=False"]["float32"] < 1e-5
    assert all(p["determinism"]["bitwise_equal"].values()) and len(p["determinism"]["bitwise_equal"]) == 9
    assert set(p["compiled"]["results"]) == {"st_cnn affine", "ST projective", "ST tps"}
    assert all(math.isfinite(r["test_error"]) for r in p["amp"]["runs"].values())
    cases = p["timings"]["cases"]
    assert set(cases) == {"affine", "bandwidth", "tps", "train_step"}
    assert {"fp32", "bf16", "compiled"} <= set(cases["train_step"]["images_per_s"])
    assert cases["bandwidth"]["gb_per_s"]["copy"] > 0
    cell = p["paper_cell"]
    assert cell["final"] and cell["step"] == cell["iterations"] == 40 and 0 <= cell["test_error"] <= 100
    assert (Path(cell["run_dir"]) / "last.pt").is_file() and Path(cell["run_dir"]).parent == out
    # a lease brings back at most 8 files from two folder levels: the report and the run folder, nothing else
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert len(files) <= 6 and all(f.count("/") <= 1 for f in files), files


@pytest.mark.slow
def test_a_failing_part_is_reported_and_a_partial_cell_resumes(tmp_path):
    # parity raises (planted); the cell gets 3 s, all of which the evaluation reserve takes: it stops after the probe
    first = tmp_path / "first"
    code, doc, log = run_check(
        first, "--parts", "parity,paper_cell", "--break-part", "parity", "--budget-minutes", "0.05"
    )
    assert code == 1, log
    broken = doc["parts"]["parity"]
    assert broken["status"] == "error" and "BreakPart: --break-part parity" in broken["error"]
    assert broken["checks"] == [{"name": "ran up to the planted error", "ok": True}]
    cell = doc["parts"]["paper_cell"]
    assert cell["status"] == "ok", cell
    assert not cell["data"]["final"] and cell["data"]["step"] == 4 and len(cell["data"]["chunks"]) == 1
    assert "| parity | error |" in (first / "gpu_check.md").read_text()
    # the next lease: a fresh --out, continuing from the first one's run folder
    second = tmp_path / "second"
    code, doc, log = run_check(second, "--parts", "paper_cell", "--resume-from", cell["data"]["run_dir"])
    assert code == 0, log
    cell = doc["parts"]["paper_cell"]["data"]
    assert cell["start_step"] == 4 and cell["step"] == 40 and cell["final"] and cell["chunks"][0]["from"] == 4


@pytest.fixture(scope="module")
def gpu_check():
    """The script as a module (its folder goes on ``sys.path`` as the script itself puts it there)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "args, says",
    [
        (["--parts", "parity,timing"], "unknown part(s) ['timing']"),
        (["--break-part", "everything"], "unknown part(s) ['everything']"),
        (["--budget-minutes", "0"], "--budget-minutes must be positive, got 0"),
    ],
)
def test_bad_options_are_refused(gpu_check, capsys, args, says):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse(["--dry", *args])
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_parts_list_matches_the_script(gpu_check):
    assert list(gpu_check.PARTS) == PARTS
    assert gpu_check.parse(["--parts", " amp, parity"]).parts == ["amp", "parity"]
