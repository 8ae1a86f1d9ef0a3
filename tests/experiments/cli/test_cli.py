import csv
import json
import runpy
import sys
import types
from pathlib import Path

import pytest

from torchstn.experiments.cli import main


@pytest.fixture
def tiny_config(tmp_path, tiny_toml):
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_toml())
    return path


def test_train_eval_show(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), "--out", str(run), "--set", "optim.iterations=4", "--quiet"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 4 and "--set optim.iterations=4" in result["command"]
    assert (run / "config.toml").read_text().count("iterations = 4") == 1

    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "test error" in out and "RTS test set" in out

    assert main(["show", str(run / "last.pt"), "--out", str(tmp_path / "fig.png"), "-n", "4"]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 1000

    np = pytest.importorskip("numpy")
    from torchstn.data import DistortedMNIST, synthetic_digits

    images, labels = DistortedMNIST("RTS", "test", source=synthetic_digits(30, seed=5)).batch(list(range(30)))
    np.savez(tmp_path / "mine.npz", images=images.numpy(), labels=labels.numpy())
    assert main(["eval", str(run), "--data", str(tmp_path / "mine.npz")]) == 0
    assert "mine.npz" in capsys.readouterr().out
    assert main(["eval", str(run), "--by-squash"]) == 2  # an RTS run: no P draws to bin
    assert "needs a run on the fixed P test set" in capsys.readouterr().err


def test_eval_by_squash_bins_every_p_test_image(tiny_config, tmp_path, capsys):
    """The P table's rows hold every test image once and every error once (synthetic digits, a 2-step run)."""
    run = tmp_path / "p"
    sets = ["--set", "data.variant=P", "--set", "data.synthetic=1200", "--set", "optim.iterations=2"]
    assert main(["train", str(tiny_config), "--out", str(run), *sets, "--quiet"]) == 0
    assert main(["eval", str(run), "--by-squash"]) == 0
    out = capsys.readouterr().out
    wrong, total = (int(v) for v in out.split("% (")[1].split(" wrong")[0].split("/"))
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "squash" not in line]
    assert [r[0].strip() for r in rows][0] == "0-0.05" and len(rows) == 7
    assert sum(int(r[1].replace(",", "")) for r in rows) == total == 200
    assert sum(int(r[2]) for r in rows) == wrong
    figure = tmp_path / "squashed.png"
    assert main(["eval", str(run), "--squash-figure", str(figure)]) == 2  # without --by-squash
    assert "add --by-squash" in capsys.readouterr().err and not figure.exists()
    assert main(["eval", str(run), "--by-squash", "--squash-figure", str(figure)]) == 0
    assert figure.stat().st_size > 5000


def test_train_progress_and_gif(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), "--out", str(run), "--gif", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "test error" in out
    assert (run / "st.gif").stat().st_size > 0
    rows = list(csv.DictReader(open(run / "metrics.csv", newline="")))
    assert [r["step"] for r in rows if r["phase"] == "train"] == ["2", "4", "6"]


def test_config_errors_are_one_line(tiny_config, capsys):
    assert main(["train", str(tiny_config), "--set", "optim.lr=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchstn train: error:") and "optim.lr" in err and "Traceback" not in err
    assert main(["train", str(tiny_config), "--set", "model.nme=cnn"]) == 2
    assert "Did you mean 'model.name'" in capsys.readouterr().err
    assert main(["eval", "does/not/exist.pt"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_train_list_shows_the_cells_and_the_packaged_configs(capsys):
    assert main(["train", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "table1:RTS/st_cnn_affine" in names and "3d:3D/st3d_cnn_affine3d" in names
    assert "demo" in names and "colocalisation_encoder" in names and "icstn:ICSTN/ic_stn4_projective" in names
    assert len(names) == 46 + 5 + 2 and "table1_rts_st_cnn_affine" not in names  # old spellings still load, unlisted


def test_data_fetch_and_show(monkeypatch, tmp_path, capsys):
    import torchstn.data.mnist as mnist

    monkeypatch.setattr(mnist, "fetch_mnist", lambda root=None, source="auto", say=None: tmp_path / "mnist")
    assert main(["data", "fetch", "mnist"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "mnist")

    calls = []
    fake = types.ModuleType("torchstn.experiments.data_figure")
    fake.save_samples_figure = lambda name, out, n=32, seed=0, root=None: calls.append((name, out, n)) or out
    monkeypatch.setitem(sys.modules, "torchstn.experiments.data_figure", fake)
    assert main(["data", "show", "RTS", "--out", str(tmp_path / "rts.png"), "-n", "8"]) == 0
    assert calls == [("RTS", str(tmp_path / "rts.png"), 8)]


def test_reproduce_writes_tables(monkeypatch, tmp_path, capsys):
    import torchstn.experiments.engine.trainer as trainer

    def fake_fit(cfg, out, **kwargs):
        err = {0: 1.0, 1: 2.0}[cfg.run.seed]
        return {
            "test_error": err,
            "parameters": 1234,
            "train_s": 60.0,
            "iterations": 10,
            "completed": True,
            "device": "cpu",
            "config": {"model": {"name": cfg.model.name, "transform": cfg.model.transform}},
        }

    monkeypatch.setattr(trainer, "fit", fake_fit)
    argv = [
        "reproduce",
        "table1",
        "--seeds",
        "2",
        "--only",
        "rts/st_cnn_affine,R/fcn",
        "--out",
        str(tmp_path),
        "--runs",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "table1_cpu.csv", newline="")))
    assert [(r["variant"], r["model"], r["paper_error"]) for r in rows] == [
        ("R", "fcn", "2.1"),
        ("RTS", "st_cnn_affine", "0.5"),
    ]
    assert rows[1]["ours_mean"] == "1.500" and rows[1]["ours_std"] == "0.707" and rows[1]["errors"] == "1.00;2.00"
    md = (tmp_path / "table1_cpu.md").read_text()
    assert "| RTS | st_cnn_affine | 0.5 | 1.50 +- 0.71 | 2 | 1,234 | 10 |" in md
    assert "torchstn reproduce table1 --schedule cpu --seeds 2 --only RTS/st_cnn_affine" in md
    assert main(["reproduce", "table1", "--only", "XYZ/*"]) == 2
    assert "matches no table1 cell" in capsys.readouterr().err


@pytest.mark.parametrize(
    "experiment, cells",
    [
        ("tc", ["TC/fcn", "TC/cnn", "TC/st_fcn_affine", "TC/st_cnn_affine"]),
        (
            "addition",
            [
                "addition/fcn",
                "addition/cnn",
                "addition/st_fcn_affine",
                "addition/st_fcn_projective",
                "addition/st_fcn_tps",
                "addition/st_fcn_2x_affine",
                "addition/st_fcn_2x_projective",
                "addition/st_fcn_2x_tps",
            ],
        ),
        ("3d", ["3D/proj_cnn", "3D/st3d_cnn_affine3d"]),
    ],
)
def test_reproduce_experiments_list_their_cells(experiment, cells, capsys):
    assert main(["reproduce", experiment, "--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == cells


def test_reproduce_shortened_runs_get_their_own_directory(monkeypatch, tmp_path):
    import torchstn.experiments.engine.trainer as trainer
    from torchstn.experiments.engine.config import resolve

    seen = []

    def fake_fit(cfg, out, **kwargs):
        cfg = resolve(cfg)
        seen.append((str(out), cfg.optim.iterations, kwargs["command"]))
        return {
            "test_error": 5.0,
            "parameters": 10,
            "train_s": 1.0,
            "iterations": cfg.optim.iterations,
            "completed": True,
            "device": "cpu",
            "config": {"model": {"name": cfg.model.name, "transform": cfg.model.transform}},
        }

    monkeypatch.setattr(trainer, "fit", fake_fit)
    base = [
        "reproduce",
        "addition",
        "--seeds",
        "1",
        "--only",
        "addition/st_fcn_2x_tps",
        "--out",
        str(tmp_path),
        "--runs",
        str(tmp_path / "runs"),
        "--quiet",
        "--set",
        "run.threads=1",
    ]
    assert main(base + ["--set", "optim.iterations=300"]) == 0
    assert main(base) == 0
    (short, its, command), (full, full_its, _) = seen
    assert its == 300 and full_its == 4000 and short != full
    assert short.endswith("cpu+optim.iterations=300/seed0") and full.endswith("cpu/seed0")
    assert command.endswith("--set run.threads=1 --set optim.iterations=300")
    md = (tmp_path / "addition_cpu.md").read_text()
    assert "| addition | st_fcn_2x_tps | 5.8 | 5.00 (n=1) | 1 | 10 | 4,000 |" in md
    short_md = (tmp_path / "addition_cpu+optim.iterations=300.md").read_text()  # its own table, not overwritten
    assert "| addition | st_fcn_2x_tps | 5.8 | 5.00 (n=1) | 1 | 10 | 300 |" in short_md
    assert "`cpu+optim.iterations=300` schedule" in short_md


def test_reproduce_reuses_a_finished_run_only_if_its_config_is_the_cells(monkeypatch, tmp_path, capsys):
    import torchstn.experiments.engine.trainer as trainer
    from torchstn.experiments.engine.config import resolve, to_dict
    from torchstn.experiments.engine.config_io import apply_overrides, load_config

    calls = []
    monkeypatch.setattr(trainer, "fit", lambda cfg, out, **kwargs: calls.append(out))
    cfg = resolve(
        apply_overrides(load_config("addition:addition/st_fcn_2x_affine"), ["run.seed=0", "optim.iterations=300"])
    )
    run_dir = tmp_path / "runs" / "addition_st_fcn_2x_affine" / "cpu+optim.iterations=300" / "seed0"
    run_dir.mkdir(parents=True)
    result = {
        "test_error": 7.0,
        "parameters": 10,
        "train_s": 1.0,
        "iterations": 300,
        "completed": True,
        "device": "cpu",
        "config": to_dict(cfg),
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    argv = [
        "reproduce",
        "addition",
        "--seeds",
        "1",
        "--only",
        "addition/st_fcn_2x_affine",
        "--out",
        str(tmp_path),
        "--runs",
        str(tmp_path / "runs"),
        "--quiet",
        "--set",
        "run.threads=1",
        "--set",
        "optim.iterations=300",
    ]
    assert main(argv) == 0 and calls == []  # the same config (run.threads may differ): reused, not retrained
    assert "| 7.00 (n=1) |" in (tmp_path / "addition_cpu+optim.iterations=300.md").read_text()
    for amp in ("off", "bf16"):  # the cell leaves run.amp on "auto", which stands for the mode the run chose
        result["config"]["run"]["amp"] = amp
        (run_dir / "result.json").write_text(json.dumps(result))
        assert main(argv) == 0 and calls == []

    result["config"]["optim"]["loc_lr_mult"] = 1.0  # trained before the cell's spec changed
    (run_dir / "result.json").write_text(json.dumps(result))
    assert main(argv) == 2 and calls == []
    err = capsys.readouterr().err
    assert "trained with another config" in err and "optim.loc_lr_mult" in err and str(run_dir) in err


def test_run_key_joins_each_override_with_plus():
    from torchstn.experiments.reproduce import _run_key

    assert _run_key("cpu", ["run.threads=1"]) == "cpu"  # run-only settings do not change what is computed
    assert (
        _run_key("cpu", ["optim.iterations=40000", "model.bound=1", "run.threads=2"])
        == "cpu+model.bound=1+optim.iterations=40000"
    )
    assert _run_key("paper", ["model.channels=[4, 4]"]) == "paper+model.channels=-4--4-"


def test_demo_smoke(monkeypatch, tmp_path, capsys):
    import torchstn.data.mnist as mnist

    monkeypatch.setattr(mnist, "fetch_mnist", lambda root=None, source="auto": tmp_path)
    argv = [
        "demo",
        "--minutes",
        "0.1",
        "--out",
        str(tmp_path / "demo"),
        "--quiet",
        "--set",
        "data.synthetic=120",
        "--set",
        "model.channels=[4, 4]",
        "--set",
        "optim.batch_size=16",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "RTS test error" in out and "ST-CNN 0.5%" in out and "CNN 0.8%" in out
    assert (tmp_path / "demo" / "st.png").is_file() and (tmp_path / "demo" / "result.json").is_file()


def test_python_dash_m_runs_the_cli(monkeypatch, capsys):
    import torchstn

    monkeypatch.setattr(sys, "argv", ["torchstn", "--help"])
    with pytest.raises(SystemExit) as exit_:  # what `python -m torchstn --help` runs
        runpy.run_path(str(Path(torchstn.__file__).with_name("__main__.py")), run_name="__main__")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "show", "reproduce", "data", "demo"):
        assert command in out


def test_reproduce_writes_beside_its_runs_and_records_portable_commands(monkeypatch, tmp_path, capsys):
    import torchstn.experiments.engine.trainer as trainer

    def fake_fit(cfg, out, **kwargs):
        return {
            "test_error": 82.39,
            "parameters": 10,
            "train_s": 1.0,
            "iterations": 30,
            "completed": True,
            "device": "cpu",
            "config": {"model": {"name": cfg.model.name, "transform": cfg.model.transform}},
        }

    monkeypatch.setattr(trainer, "fit", fake_fit)
    monkeypatch.chdir(tmp_path)  # a pip user's working directory: no docs/ folder may appear in it
    base = ["reproduce", "table1", "--seeds", "1", "--only", "RTS/fcn", "--quiet", "--set", "optim.iterations=30"]
    assert main(base) == 0
    md = (tmp_path / "runs" / "table1" / "table1_cpu+optim.iterations=30.md").read_text()
    assert not (tmp_path / "docs").exists()
    assert "| RTS | fcn | 5.2 | 82.39 (n=1) | 1 |" in md and "+- 0.00" not in md
    assert "`torchstn reproduce table1 --schedule cpu --seeds 1 --only RTS/fcn --set optim.iterations=30` |" in md

    argv = base + ["--runs", str(tmp_path / "scratch" / "rep"), "--out", str(tmp_path / "scratch" / "rep_out")]
    assert main(argv) == 0
    md = (tmp_path / "scratch" / "rep_out" / "table1_cpu+optim.iterations=30.md").read_text()
    assert "--set optim.iterations=30 --runs scratch/rep --out scratch/rep_out` |" in md
    assert (
        str(tmp_path) not in md
        and str(tmp_path) not in (tmp_path / "scratch" / "rep_out" / "table1_cpu+optim.iterations=30.csv").read_text()
    )


def test_colocalisation_table_records_no_machine_path(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    argv = [
        "reproduce",
        "colocalisation",
        "--out",
        str(tmp_path / "coloc"),
        "--digits",
        "2",
        "--clutter",
        "plain",
        "--steps",
        "2",
        "--n",
        "4",
        "--synthetic",
        "120",
        "--threads",
        "1",
        "--encoder-set",
        "optim.iterations=2",
        "--encoder-set",
        "model.channels=[4, 4]",
    ]
    assert main(argv) == 0
    md = (tmp_path / "coloc" / "colocalisation.md").read_text()
    assert "Command: `torchstn reproduce colocalisation --out coloc --steps 2" in md
    assert "Encoder: `coloc/encoder/last.pt`" in md and "--out coloc/encoder" in md and str(tmp_path) not in md
