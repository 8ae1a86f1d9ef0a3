"""The life of a `torchstn train` run as a user meets it: a real SIGINT / SIGTERM at a random moment, the printed
command that continues it, and what happens to a directory that already holds a run.

The interrupted runs are real processes (`python -m torchstn train`) signalled after a random delay, so the signal
lands anywhere in an iteration (drawing the batch, forward, backward, the optimiser step, logging). Each is resumed
with the exact command it printed, and must end bit-identical to the uninterrupted run: weights, metrics.csv (but
for the wall-time columns) and test error.
"""

import concurrent.futures
import csv
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import torchstn
from tests.fixtures.signals import default_signals_in_child
from torchstn.experiments.cli import main
from torchstn.experiments.engine import checkpoint as ckpt

SRC = Path(torchstn.__file__).resolve().parents[1]

_TIME_COLUMNS = ("img_per_s", "elapsed_s")


@pytest.fixture
def tiny_config(tmp_path, tiny_toml):
    """160 iterations of the tiny run (5-10 ms each on one thread) with no periodic checkpoint before the end: a
    resume can only come from the checkpoint the signal wrote."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        tiny_toml(
            **{
                "optim.iterations": 160,
                "run.log_every": 7,
                "run.checkpoint_every": 100000,
                "run.eval_every": 100,
                "run.eval_limit": 10,
            }
        )
    )
    return path


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in _TIME_COLUMNS} for r in csv.DictReader(f)]


def _assert_same_run(a: Path, b: Path, why: str) -> None:
    wa, wb = ckpt.load_checkpoint(a / "last.pt")["model"], ckpt.load_checkpoint(b / "last.pt")["model"]
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{why}: weights differ in {differ}"
    assert _rows(a) == _rows(b), f"{why}: metrics.csv differs"
    ra, rb = json.loads((a / "result.json").read_text()), json.loads((b / "result.json").read_text())
    assert (ra["test_error"], ra["test_loss"], ra["steps"]) == (rb["test_error"], rb["test_loss"], rb["steps"]), why


def _interrupt(config: Path, out: Path, sig: int, delay: float, extra: list[str]) -> tuple[int, str]:
    """Start `python -m torchstn train`, send ``sig`` ``delay`` s after its first metrics row (training is under way,
    with or without --quiet); returns its exit status and stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))
    with open(out.with_suffix(".err"), "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torchstn", "train", str(config), "--out", str(out), *extra],
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=env,
            preexec_fn=default_signals_in_child,
        )
        try:
            metrics = out / "metrics.csv"
            while proc.poll() is None and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
                time.sleep(0.01)
            time.sleep(delay)
            proc.send_signal(sig)
            proc.communicate(timeout=120)
        finally:
            proc.kill()
        err.seek(0)
        return proc.returncode, err.read()


def test_a_real_signal_at_a_random_moment_resumes_bit_identically(tiny_config, tmp_path):
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    trials = [(signal.SIGINT, []), (signal.SIGINT, []), (signal.SIGTERM, ["--quiet"])]
    delays = [rng.uniform(0.0, 0.5) for _ in trials]
    with concurrent.futures.ThreadPoolExecutor(len(trials)) as pool:  # the interrupted runs, side by side
        futures = [
            pool.submit(_interrupt, tiny_config, tmp_path / f"run{i}", sig, delay, extra)
            for i, ((sig, extra), delay) in enumerate(zip(trials, delays))
        ]
        # meanwhile, here: the uninterrupted run
        assert main(["train", str(tiny_config), "--out", str(tmp_path / "straight"), "--quiet"]) == 0
        done = [f.result() for f in futures]
    for i, ((sig, _extra), delay, (rc, err)) in enumerate(zip(trials, delays, done)):
        why = f"{signal.Signals(sig).name} after {delay:.3f} s (seed {seed}); stderr: {err[-1500:]}"
        assert rc == 128 + sig, why  # 130 for SIGINT, 143 for SIGTERM
        # the one line to go on, printed with --quiet too, holding a command that works as printed
        found = re.search(r"checkpoint saved at iteration (\d+) .*; continue with: (torchstn train .*)$", err, re.M)
        assert found, why
        step, command = int(found.group(1)), found.group(2)
        assert command == f"torchstn train --resume --out {shlex.quote(str(tmp_path / f'run{i}'))}", why
        assert 0 <= step < 160 and ckpt.load_checkpoint(tmp_path / f"run{i}" / "last.pt")["step"] == step, why
        assert main(shlex.split(command)[1:] + ["--quiet"]) == 0, why
        _assert_same_run(tmp_path / "straight", tmp_path / f"run{i}", why)


def test_resume_needs_a_checkpoint(tiny_config, tmp_path, capsys):
    empty = tmp_path / "typo"
    assert main(["train", str(tiny_config), "--resume", "--out", str(empty), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume: {empty} holds no checkpoint" in err and not (empty / "metrics.csv").exists()
    # without CONFIG, --resume reads OUT/config.toml: a directory without one is named too
    assert main(["train", "--resume", "--out", str(empty)]) == 2
    assert f"{empty} holds no run" in capsys.readouterr().err
    assert main(["train", "--out", str(empty)]) == 2  # no CONFIG and no --resume
    assert "CONFIG is required" in capsys.readouterr().err


def test_a_directory_holding_a_run_is_refused_unless_resume_or_overwrite(tiny_config, tmp_path, capsys):
    run, fast = tmp_path / "run", ["--set", "optim.iterations=3", "--set", "eval_every=0", "--quiet"]
    assert main(["train", str(tiny_config), "--out", str(run), "--gif", *fast]) == 0
    (run / "tb").mkdir()
    (run / "tb" / "events.out.tfevents.1").write_text("old run")  # what TensorBoard would have left
    (run / "notes.txt").write_text("mine")
    before = (run / "last.pt").read_bytes()
    assert main(["train", str(tiny_config), "--out", str(run), *fast]) == 2
    err = capsys.readouterr().err
    assert f"{run} already holds a run" in err and "--out NEW" in err and "--overwrite" in err
    assert (run / "last.pt").read_bytes() == before and (run / "st.gif").is_file()  # untouched
    # `torchstn train runs/x/config.toml` would train into runs/x itself (its run.out): refused, with the hint
    assert main(["train", str(run / "config.toml"), *fast]) == 2
    err = capsys.readouterr().err
    assert f"{run} (run.out of {run / 'config.toml'}) already holds a run" in err and "--out NEW" in err
    assert main(["train", str(run / "config.toml"), "--out", str(tmp_path / "again"), *fast]) == 0
    # --overwrite deletes the old run's files (no stale GIF, no mixed TensorBoard events), and nothing else
    assert main(["train", str(tiny_config), "--out", str(run), "--overwrite", *fast]) == 0
    assert not (run / "st.gif").exists() and not (run / "gif").exists() and not (run / "tb").exists()
    assert (run / "notes.txt").read_text() == "mine" and (run / "result.json").is_file()
    assert main(["train", str(tiny_config), "--out", str(run), "--overwrite", "--resume", *fast]) == 2


def test_other_commands_report_a_stopped_training_with_its_exit_status(monkeypatch, tmp_path, capsys):
    # reproduce (and demo) let fit's TrainingInterrupted through: the CLI says where the checkpoint is, 143 for SIGTERM
    import torchstn.experiments.engine.trainer as trainer
    from torchstn.experiments.engine.signals import TrainingInterrupted

    def stopped_fit(cfg, out, **kwargs):
        raise TrainingInterrupted(
            f"interrupted by SIGTERM: checkpoint saved at iteration 7 in {out}/last.pt",
            signum=signal.SIGTERM,
            step=7,
            saved=True,
            out=str(out),
        )

    monkeypatch.setattr(trainer, "fit", stopped_fit)
    argv = [
        "reproduce",
        "table1",
        "--seeds",
        "1",
        "--only",
        "R/fcn",
        "--out",
        str(tmp_path),
        "--runs",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    assert main(argv) == 143
    assert "torchstn reproduce: interrupted by SIGTERM: checkpoint saved at iteration 7" in capsys.readouterr().err
