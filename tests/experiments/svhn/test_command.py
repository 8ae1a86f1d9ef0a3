"""``torchstn svhn prepare | train | eval`` end to end on the fixture release, through the real ``torchstn`` parser;
a run resumed by the command; a config file with ``[task] name = "svhn"`` through ``torchstn train``; the old
spellings of overrides, which still work and warn."""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch

from torchstn.experiments import svhn
from torchstn.experiments.cli import main
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.trainer import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--set", "model.channels=[4,4,4,4,4,4,4,4]", "--set", "task.fc=[8,8]", "--threads", "1"]


def _train_flags(cache, out, iterations=4):
    return [
        "svhn",
        "train",
        "--data",
        str(cache),
        "--out",
        str(out),
        "--schedule",
        "smoke",
        "--set",
        f"optim.iterations={iterations}",
        "--set",
        "optim.batch_size=4",
        *TINY,
    ]


def _losses(run):
    with open(run / "metrics.csv", newline="") as f:
        return [r["loss"] for r in csv.DictReader(f) if r["phase"] == "train"]


def test_prepare_train_eval(svhn_release, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["svhn", "prepare", "--src", str(svhn_release[0]), "--out", str(cache), "--val-size", "2"]) == 0
    out = capsys.readouterr().out  # progress lines, then the report
    assert json.loads(out[out.index("{\n") :])["images"] == {"train": 9, "val": 2, "test": 5}
    run = tmp_path / "run"
    assert main([*_train_flags(cache, run), "--crop", "60", "--eval-limit", "1", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((run / "result.json").read_text())
    assert printed == {"steps": 4, "val_sequence_error": result["test_error"] / 100, "val_n": 1, "out": str(run)}
    task = {k: v for k, v in result["config"]["task"].items() if v is not None}
    assert task == {
        "name": "svhn",
        "size": 64,
        "crop": 60,
        "eval_split": "val",
        "held_out_limit": 1,
        "fc": [8, 8],
        "extra_conv": False,
        "batch_norm": False,
    }
    assert result["command"].startswith("torchstn svhn train --data") and "--crop 60" in result["command"]
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "last.pt", "metrics.csv", "result.json"]

    assert main(["svhn", "eval", "--checkpoint", str(run / "last.pt"), "--split", "test"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["split"], res["n"], res["step"]) == ("test", 5, 4) and 0.0 <= res["sequence_error"] <= 1.0
    assert svhn.evaluate(str(run), split="test") == {**res, "checkpoint": str(run)}  # a run folder works too
    assert main(["eval", str(run)]) == 0  # the engine's eval command evaluates through the task
    assert f"({round(result['test_error'] / 100)}/1 wrong)" in capsys.readouterr().out  # as in the run's result

    assert main(_train_flags(cache, run)) == 2  # the folder holds a run: refused
    assert "already holds a run" in capsys.readouterr().err
    assert main([*_train_flags(cache, run, iterations=3), "--overwrite", "--quiet"]) == 0
    assert json.loads((run / "result.json").read_text())["steps"] == 3


def test_resume_continues_exactly(svhn_cache, tmp_path, capsys):
    """A run stopped at iteration 2 (as Ctrl-C would) and continued with ``--resume`` ends as the one that ran."""
    assert main([*_train_flags(svhn_cache, tmp_path / "a", 5), "--crop", "54", "--quiet"]) == 0
    resumed = [*_train_flags(svhn_cache, tmp_path / "b", 5), "--crop", "54", "--quiet", "--resume"]
    assert main(resumed) == 0  # nothing to resume yet: --resume starts the run, as before
    first = _losses(tmp_path / "b")
    fit(
        svhn.svhn_config(
            str(svhn_cache),
            schedule="smoke",
            crop=54,
            overrides=[
                "optim.iterations=5",
                "optim.batch_size=4",
                "model.channels=[4,4,4,4,4,4,4,4]",
                "task.fc=[8,8]",
                "run.threads=1",
            ],
        ),
        tmp_path / "c",
        progress=False,
        stop_after=2,
    )
    assert main([*resumed[:5], str(tmp_path / "c"), *resumed[6:]]) == 0
    assert _losses(tmp_path / "a") == first == _losses(tmp_path / "c") != []
    a, c = (ckpt.load_checkpoint(tmp_path / d / "last.pt")["model"] for d in "ac")
    assert all(torch.equal(a[k], c[k]) for k in a)
    capsys.readouterr()
    assert main([*_train_flags(svhn_cache, tmp_path / "c", 6), "--crop", "54", "--resume"]) == 2
    assert "config differs from the checkpoint's in optim.iterations" in capsys.readouterr().err


def test_a_config_file_trains_svhn(svhn_cache, tmp_path, capsys):
    config = tmp_path / "svhn.toml"
    config.write_text(
        f'[task]\nname = "svhn"\nfc = [8, 8]\n\n[data]\nvariant = "svhn"\nroot = "{svhn_cache}"\n\n'
        '[model]\nname = "svhn_cnn"\nchannels = [4, 4, 4, 4, 4, 4, 4, 4]\n\n'
        '[optim]\nschedule = "svhn_smoke"\niterations = 3\nbatch_size = 4\n'
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--threads", "1", "--quiet"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["config"]["task"]["name"] == "svhn" and result["localisation_parameters"] == 0
    assert "test error" in capsys.readouterr().out


def test_old_spellings_warn_and_still_work(svhn_cache):
    with pytest.warns(DeprecationWarning) as record:
        cfg = svhn.svhn_config(str(svhn_cache), overrides=["iterations=5", "lr_steps=2"])
    assert [str(w.message) for w in record] == [
        "--set iterations=5 is the old spelling of --set optim.iterations=5",
        "--set lr_steps=2 is the old spelling of --set optim.lr_steps=[2]",
    ]
    assert (cfg.optim.iterations, cfg.optim.lr_steps) == (5, (2,))
    args = svhn.get_args_parser().parse_args(
        ["train", "--data", "d", "--out", "o", "--model-option", "fc=(16, 16)", "--model-option", "batch_norm=True"]
    )
    with pytest.warns(DeprecationWarning) as record:
        options = svhn.command.parse_model_options(args.model_option)
    assert [str(w.message) for w in record] == [
        "--model-option fc=(16, 16) is the old spelling of --set task.fc=[16, 16]",
        "--model-option batch_norm=True is the old spelling of --set task.batch_norm=true",
    ]
    cfg = svhn.svhn_config("d", model_options=options)
    assert (cfg.task.options.fc, cfg.task.options.batch_norm) == ((16, 16), True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spellings do not warn
        cfg = svhn.svhn_config("d", overrides=["optim.lr_steps=[2]", "optim.iterations=5", "seed=3"])
    assert cfg.run.seed == 3 and svhn.SCHEDULES["paper"]["lr"] == 0.01


def test_bad_flags_are_one_line_errors(svhn_cache, tmp_path, capsys):
    assert main([*_train_flags(svhn_cache, tmp_path / "a"), "--set", "optim.lr_step=3"]) == 2
    assert "Did you mean 'optim.lr_steps'" in capsys.readouterr().err
    assert main([*_train_flags(svhn_cache, tmp_path / "b"), "--set", "task.chanels=[4]"]) == 2
    assert "unknown key 'task.chanels'" in capsys.readouterr().err
    assert main([*_train_flags(tmp_path / "nowhere", tmp_path / "c")]) == 2
    assert "torchstn svhn prepare" in capsys.readouterr().err
    assert main(["svhn", "eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["svhn", "train", "--data", "d", "--out", "o", "--model", "svhn_cnnn"])
