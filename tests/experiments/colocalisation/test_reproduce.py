"""``torchstn reproduce colocalisation`` on tiny settings: the encoder trained by ``fit``, each case a run directory
of ``fit``, the table, reuse of finished cases only when their config is the case's, resume of an interrupted case,
``--fresh``."""

import csv
import json

import pytest

from torchstn.errors import ConfigError, OptionError
from torchstn.experiments import colocalisation as coloc
from torchstn.experiments.cli import main as cli
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.trainer import fit

from .conftest import SYNTHETIC

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(steps=4, n=6, synthetic=SYNTHETIC, say=None, overrides=["run.log_every=2"])


def ckpt_path(run_dir):
    return str(run_dir / "last.pt")  # what reproduce puts in task.encoder: the encoder's checkpoint


def _train_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(r["step"], r["loss"], r["error"]) for r in csv.DictReader(f) if r["phase"] == "train"]


def test_reproduce_trains_the_encoder_and_writes_its_table(tmp_path):
    tiny = ["optim.iterations=2", "model.channels=[4, 4]"]
    rows = coloc.reproduce_colocalisation(tmp_path, digits=[1], clutter=(False, True), encoder_overrides=tiny, **TINY)
    assert [(r["digit"], r["clutter"], r["paper"], r["steps"]) for r in rows] == [
        (1, False, "100", 4),
        (1, True, "75-93", 4),
    ]
    assert (tmp_path / "encoder" / "result.json").is_file()
    for case in ("digit1_plain", "digit1_cluttered"):
        assert {"config.toml", "last.pt", "metrics.csv", "result.json"} <= {p.name for p in (tmp_path / case).iterdir()}
        result = json.loads((tmp_path / case / "result.json").read_text())
        assert result["config"]["task"]["encoder"] == str(tmp_path / "encoder" / "last.pt")
        assert (
            result["command"].startswith("torchstn reproduce colocalisation")
            and "--digits 1 --clutter" in result["command"]
        )
    with open(tmp_path / "colocalisation.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["digit"] for t in table] == ["1", "1"] and all(0 <= float(t["rate"]) <= 100 for t in table)
    assert float(table[0]["rate"]) == pytest.approx(
        100 * json.loads((tmp_path / "digit1_plain" / "result.json").read_text())["test_rate"], rel=1e-3
    )
    md = (tmp_path / "colocalisation.md").read_text()
    assert "| Digit | Clutter | IoU > 0.5 (ours) | Paper |" in md and "--synthetic 200" in md and "Synthetic" in md
    pytest.importorskip("matplotlib")
    assert (tmp_path / "colocalisation_plain.png").stat().st_size > 0
    assert (tmp_path / "colocalisation_cluttered.png").stat().st_size > 0


def test_finished_cases_are_reused_only_with_their_config(encoder_run, tmp_path):
    settings = dict(TINY, digits=[2], clutter=(False,), encoder_checkpoint=encoder_run)
    first = coloc.reproduce_colocalisation(tmp_path, **settings)
    last = tmp_path / "digit2_plain" / "last.pt"
    stamp = last.stat().st_mtime_ns
    assert coloc.reproduce_colocalisation(tmp_path, **settings) == first and last.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="differs in task.alpha"):
        coloc.reproduce_colocalisation(tmp_path, **dict(settings, overrides=["run.log_every=2", "task.alpha=0.5"]))
    with pytest.raises(ConfigError, match="optim.iterations"):
        coloc.reproduce_colocalisation(tmp_path, **dict(settings, steps=6))
    again = coloc.reproduce_colocalisation(tmp_path, **dict(settings, resume=False))  # --fresh
    assert last.stat().st_mtime_ns != stamp and [r["rate"] for r in again] == [r["rate"] for r in first]


def test_an_interrupted_case_is_resumed_exactly(encoder_run, tmp_path):
    settings = dict(TINY, digits=[2], clutter=(True,), encoder_checkpoint=encoder_run)
    coloc.reproduce_colocalisation(tmp_path / "whole", **settings)
    cfg = coloc.case_config(
        2, True, encoder=ckpt_path(encoder_run), steps=4, n=6, synthetic=SYNTHETIC, overrides=["run.log_every=2"]
    )
    assert fit(cfg, tmp_path / "cut" / "digit2_cluttered", progress=False, stop_after=1)["step"] == 1
    coloc.reproduce_colocalisation(tmp_path / "cut", **settings)
    whole, cut = tmp_path / "whole" / "digit2_cluttered", tmp_path / "cut" / "digit2_cluttered"
    assert _train_rows(whole) == _train_rows(cut) and len(_train_rows(cut)) == 2
    a, b = ckpt.load_checkpoint(whole / "last.pt")["model"], ckpt.load_checkpoint(cut / "last.pt")["model"]
    assert all(a[k].equal(b[k]) for k in a)


def test_the_command_runs_it(encoder_run, tmp_path):
    argv = [
        "reproduce",
        "colocalisation",
        "--out",
        str(tmp_path),
        "--digits",
        "2",
        "--clutter",
        "plain",
        "--steps",
        "2",
        "--n",
        "4",
        "--synthetic",
        str(SYNTHETIC),
        "--threads",
        "1",
        "--encoder",
        str(encoder_run),
        "--set",
        "run.log_every=1",
    ]
    assert cli(argv) == 0
    assert "| 2 | no |" in (tmp_path / "colocalisation.md").read_text()
    assert len(_train_rows(tmp_path / "digit2_plain")) == 2
    assert cli(["reproduce", "colocalisation", "--digits", "x"]) == 2
    assert cli([*argv, "--set", "task.alpah=2"]) == 2  # a bad override: a clear error, exit status 2


def test_python_dash_m_is_the_same_command(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "torchstn.experiments.colocalisation", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--encoder-set" in proc.stdout and "--fresh" in proc.stdout, proc.stderr[-2000:]


def test_command_line_arguments():
    parser = coloc.get_args_parser()
    args = parser.parse_args(["--digits", "1,7", "--clutter", "plain", "--steps", "50", "--set", "optim.lr=0.1"])
    assert (args.digits, args.clutter, args.steps, args.encoder, args.features) == ("1,7", "plain", 50, None, "concat")
    assert args.overrides == ["optim.lr=0.1"]
    with pytest.raises(OptionError, match="digits"):
        coloc.main(parser.parse_args(["--digits", "one"]))
