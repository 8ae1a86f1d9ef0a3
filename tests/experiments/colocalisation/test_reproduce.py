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


def _rate(run_dir):
    return 100 * json.loads((run_dir / "result.json").read_text())["test_rate"]


def test_several_seeds_give_mean_and_spread_and_are_reused(encoder_run, tmp_path):
    import statistics

    settings = dict(TINY, digits=[2], clutter=(False,), encoder_checkpoint=encoder_run, seed=5, seeds=2)
    rows = coloc.reproduce_colocalisation(tmp_path, **settings)
    runs = [tmp_path / "seed5" / "digit2_plain", tmp_path / "seed6" / "digit2_plain"]
    assert not (tmp_path / "digit2_plain").exists()
    results = [json.loads((r / "result.json").read_text()) for r in runs]
    assert [r["config"]["run"]["seed"] for r in results] == [5, 6]
    assert all("--seed 5 --seeds 2 " in r["command"] for r in results)
    a, b = (ckpt.load_checkpoint(r / "last.pt")["model"] for r in runs)
    assert not all(a[k].equal(b[k]) for k in a)  # the second seed is another run, not a copy
    rates = [_rate(r) for r in runs]
    assert [(r["seed"], r["rate"]) for r in rows] == [(5, pytest.approx(rates[0])), (6, pytest.approx(rates[1]))]
    md = (tmp_path / "colocalisation.md").read_text()
    cell = f"{statistics.mean(rates):.1f} ± {statistics.stdev(rates):.1f}% ({rates[0]:.0f} / {rates[1]:.0f})"
    assert f"| 2 | no | {cell} | 100% |" in md and "sample std" in md and "--seed 5 --seeds 2 " in md
    assert f"lowest single run {min(rates):.0f}% (digit 2, seed {5 if rates[0] <= rates[1] else 6})" in md
    with open(tmp_path / "colocalisation.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == coloc.table.SEED_COLUMNS and [(t["digit"], t["seed"]) for t in table] == [
        ("2", "5"),
        ("2", "6"),
    ]
    assert [float(t["rate"]) for t in table] == [pytest.approx(r, rel=1e-3) for r in rates]
    stamps = [(r / "last.pt").stat().st_mtime_ns for r in runs]
    assert coloc.reproduce_colocalisation(tmp_path, **settings) == rows  # finished: reused, not trained again
    assert [(r / "last.pt").stat().st_mtime_ns for r in runs] == stamps
    with pytest.raises(ConfigError, match="optim.iterations"):  # a seed's case with another config is refused
        coloc.reproduce_colocalisation(tmp_path, **dict(settings, steps=6))


def test_the_table_over_seeds_summarises_the_per_digit_means(tmp_path):
    def row(digit, seed, rate):
        return dict(
            digit=digit, clutter=False, seed=seed, rate=rate, paper="100", mean_iou=0.5 + seed / 10,
            centre_error_px=1.0, window_px=28.0, steps=200, train_s=10.0 * (seed + 1),
        )  # fmt: skip

    rows = [row(3, 0, 100.0), row(3, 1, 46.0), row(3, 2, 20.0), row(7, 0, 90.0), row(7, 1, 80.0), row(7, 2, 85.0)]
    md = coloc.table.write_tables(rows, tmp_path, ["# header"]).read_text()
    assert "| 3 | no | 55.3 ± 40.8% (100 / 46 / 20) | 100% | 0.60 | 1.0 | 28.0 | 200 | 20 s |" in md
    assert "| 7 | no | 85.0 ± 5.0% (90 / 80 / 85) |" in md
    assert (
        "Plain: mean 70.2% over 2 digit(s) x 3 seeds (the mean of the per-digit means), per-digit means "
        "55.3-85.0%, lowest single run 20% (digit 3, seed 2) (paper 100%)."
    ) in md
    with open(tmp_path / "colocalisation.csv") as f:
        assert [(t["digit"], t["seed"], t["rate"]) for t in csv.DictReader(f)][:3] == [
            ("3", "0", "100"),
            ("3", "1", "46"),
            ("3", "2", "20"),
        ]


def test_seeds_below_one_are_refused(encoder_run, tmp_path):
    with pytest.raises(ConfigError, match="seeds"):
        coloc.reproduce_colocalisation(tmp_path, **dict(TINY, digits=[2], encoder_checkpoint=encoder_run, seeds=0))
    assert list(tmp_path.iterdir()) == []  # refused before anything ran
    parser = coloc.get_args_parser()
    assert parser.parse_args([]).seeds == 1 and parser.parse_args(["--seeds", "3"]).seeds == 3
    with pytest.raises(OptionError, match="--seeds must be >= 1"):
        coloc.main(parser.parse_args(["--seeds", "-1"]))
    assert cli(["reproduce", "colocalisation", "--out", str(tmp_path), "--seeds", "0"]) == 2


def test_the_command_of_several_seeds_names_them(tmp_path):
    one = coloc.Settings(seed=4)
    three = coloc.Settings(seed=4, seeds=3)
    assert "--seeds" not in one.command(tmp_path, [1], [False])
    assert " --seed 4 --seeds 3 --n 100 " in three.command(tmp_path, [1], [False])
    assert three.seed_values == (4, 5, 6) and one.seed_values == (4,)
    assert one.run_dir(tmp_path, 1, False, 4) == tmp_path / "digit1_plain"
    assert three.run_dir(tmp_path, 1, True, 5) == tmp_path / "seed5" / "digit1_cluttered"
