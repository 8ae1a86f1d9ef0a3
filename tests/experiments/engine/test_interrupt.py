"""Stopping and resuming in-process, at chosen moments: a signal sent from inside an iteration, an evaluation or the
final evaluation, a second signal, a time limit, ``stop_after``. Each resumed run must equal the uninterrupted one.
(The random-moment test with real processes is tests/experiments/cli/test_train_lifecycle.py.)"""

import csv
import io
import os
import signal

import pytest
import torch

from torchstn.errors import ConfigError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import signals
from torchstn.experiments.engine.metrics import Progress
from torchstn.experiments.engine.signals import StopRequest, TrainingInterrupted
from torchstn.experiments.engine.trainer import fit

from ._toy import toy_config, toy_datasets

pytestmark = pytest.mark.usefixtures("one_thread", "foreground_signals")


def _rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed_s")} for r in csv.DictReader(f)]


def _weights(run):
    return ckpt.load_checkpoint(run / "last.pt")["model"]


def _assert_same(a, b):
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(a) == _rows(b)


class _Signalling:
    """A dataset that sends ``sig`` to this process at its ``at``-th batch (``twice``: two signals in a row), from
    inside an iteration or an evaluation, as a user's Ctrl-C would arrive."""

    def __init__(self, dataset, at, sig=signal.SIGINT, twice=False):
        self.dataset, self.at, self.sig, self.twice, self.calls = dataset, at, sig, twice, 0

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def __len__(self):
        return len(self.dataset)

    def batch(self, indices, generator=None):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.sig)
            if self.twice:
                os.kill(os.getpid(), self.sig)
        return self.dataset.batch(indices, generator)


def test_a_signal_inside_an_iteration_stops_after_it_and_resumes_exactly(tmp_path):
    cfg = toy_config(optim={"iterations": 20}, run={"log_every": 3, "checkpoint_every": 100})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    train, test = toy_datasets()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        fit(cfg, tmp_path / "b", progress=False, datasets=(_Signalling(train, at=8, sig=signal.SIGTERM), test))
    e = info.value
    assert (e.signum, e.step, e.saved, e.exit_status) == (signal.SIGTERM, 8, True, 143)  # iteration 8 finished
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers restored
    assert ckpt.load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 8
    torch.manual_seed(99)
    fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    _assert_same(tmp_path / "a", tmp_path / "b")  # the window of steps 7-8 was checkpointed: row 9 is the same


def test_a_second_signal_stops_at_once_and_the_last_checkpoint_stands(tmp_path, monkeypatch):
    monkeypatch.setattr(signals, "SAME_SIGNAL_S", 0.0)  # the second signal here follows the first within microseconds
    cfg = toy_config(optim={"iterations": 20}, run={"log_every": 5, "checkpoint_every": 5})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    train, test = toy_datasets()
    with pytest.raises(TrainingInterrupted) as info:
        fit(cfg, tmp_path / "b", progress=False, datasets=(_Signalling(train, at=8, twice=True), test))
    assert (info.value.saved, info.value.step, info.value.exit_status) == (False, 5, 130)
    assert "second SIGINT" in str(info.value) and "iteration 5" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert ckpt.load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 5
    fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    _assert_same(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("where", ["periodic", "final"])
def test_a_signal_during_an_evaluation_abandons_it_and_the_resume_runs_it(tmp_path, where):
    cfg = toy_config(optim={"iterations": 10}, run={"eval_every": 5, "eval_batch_size": 16, "checkpoint_every": 100})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    train, test = toy_datasets()
    at = 2 if where == "periodic" else 2 + len(test) // 16  # the 2nd batch of the first or the final evaluation
    with pytest.raises(TrainingInterrupted, match="final evaluation" if where == "final" else "iteration 5"):
        fit(cfg, tmp_path / "b", progress=False, datasets=(train, _Signalling(test, at=at)))
    saved = ckpt.load_checkpoint(tmp_path / "b" / "last.pt")
    assert saved["step"] == (5 if where == "periodic" else 10) and not saved["final"]
    assert not (tmp_path / "b" / "result.json").exists()
    result = fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    _assert_same(tmp_path / "a", tmp_path / "b")  # the abandoned evaluation's row is there, once
    assert result["steps"] == 10 and [r["step"] for r in _rows(tmp_path / "b") if r["phase"] == "test"] == ["5", "10"]


def test_resume_after_a_time_limit_reads_as_one_run(tmp_path):
    # audit #17: the finished run's final test row is dropped, and the loss window since the last row continues
    cfg = toy_config(optim={"iterations": 30}, run={"log_every": 4, "checkpoint_every": 100})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    stopped = fit(
        toy_config(optim={"iterations": 30}, run={"log_every": 4, "checkpoint_every": 100, "time_limit": 0.0001}),
        tmp_path / "b",
        progress=False,
        datasets=toy_datasets(),
    )
    assert not stopped["completed"] and stopped["steps"] < 30
    fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    _assert_same(tmp_path / "a", tmp_path / "b")


def test_stop_after_between_log_rows_resumes_the_loss_window(tmp_path):
    cfg = toy_config(optim={"iterations": 20}, run={"log_every": 4, "checkpoint_every": 100})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    fit(cfg, tmp_path / "b", progress=False, datasets=toy_datasets(), stop_after=14)
    fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    _assert_same(tmp_path / "a", tmp_path / "b")  # row 16 averages iterations 13-16, as uninterrupted


def test_resume_modes_and_run_directories(tmp_path):
    cfg = toy_config(optim={"iterations": 4})
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        fit(cfg, tmp_path / "none", resume=True, progress=False, datasets=toy_datasets())
    assert fit(cfg, tmp_path / "auto", resume="auto", progress=False, datasets=toy_datasets())["steps"] == 4
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(cfg, tmp_path / "auto", progress=False, datasets=toy_datasets())
    stream = io.StringIO()
    fit(cfg, tmp_path / "auto", overwrite=True, stream=stream, datasets=toy_datasets())
    assert f"replacing the run in {tmp_path / 'auto'}" in stream.getvalue()
    with pytest.raises(ConfigError, match="resume must be"):
        fit(cfg, tmp_path / "x", resume="yes", progress=False, datasets=toy_datasets())


def test_a_repeat_within_a_second_is_the_same_request(monkeypatch):
    # SLURM signals every process of the step and torchrun forwards the same signal to its workers
    with StopRequest(notice=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # no hard stop
        assert stop.signum == signal.SIGTERM
        monkeypatch.setattr(signals, "SAME_SIGNAL_S", 0.0)
        with pytest.raises(TrainingInterrupted, match="second SIGINT.*no checkpoint was written yet") as info:
            os.kill(os.getpid(), signal.SIGINT)
        assert info.value.exit_status == 130 and not info.value.saved


def test_stop_request_leaves_an_ignored_signal_ignored():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. a background job's SIGINT
    try:
        with StopRequest(notice=False) as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not stop.requested
    finally:
        signal.signal(signal.SIGINT, old)


def test_progress_shows_the_loss_from_the_first_iterations_and_evaluates_visibly(tmp_path):
    pytest.importorskip("tqdm")
    cfg = toy_config(optim={"iterations": 40}, run={"log_every": 50})
    with open(tmp_path / "bar.txt", "w+") as f:  # a real file: tqdm draws the bar there
        fit(cfg, tmp_path / "run", stream=f, datasets=toy_datasets(), stop_after=3)
        f.seek(0)
        bar = f.read()
    assert "3/40" in bar and "loss " in bar and "err " in bar  # no metrics row yet (log_every 50), still a loss
    stream = io.StringIO()  # plain lines: the final evaluation announces itself
    fit(toy_config(optim={"iterations": 2}), tmp_path / "plain", stream=stream, datasets=toy_datasets())
    assert "final evaluation on 128 test images" in stream.getvalue()


def test_a_time_budget_bar_ends_at_its_total(tmp_path):
    pytest.importorskip("tqdm")
    with open(tmp_path / "bar.txt", "w+") as f:
        bar = Progress(2.0, seconds=True, stream=f)
        for step, elapsed in enumerate([0.5, 1.0, 1.9, 2.05, 2.4], start=1):  # the clock runs past the budget
            bar.update(step, live={"loss": 1.0, "error": 50.0, "lr": 0.1}, elapsed=elapsed)
        assert bar._bar.n == 2.0
        bar.close()
        f.seek(0)
        text = f.read()
    assert "100%" in text and "2/2 s" in text and "iteration 5" in text and "it/s" not in text
