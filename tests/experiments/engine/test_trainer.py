import csv
import json

import pytest
import torch

from torchstn.errors import ConfigError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.config import resolve
from torchstn.experiments.engine.trainer import evaluate, fit, new_state, task_of, train_steps

from ._toy import toy_config, toy_datasets


def _train_losses(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f) if r["phase"] == "train"]


def test_learns_toy_task(tmp_path):
    cfg = toy_config(optim={"iterations": 60}, run={"eval_every": 30})
    result = fit(cfg, tmp_path / "run", progress=False, datasets=toy_datasets())
    assert result["completed"] and result["steps"] == 60
    assert result["test_error"] < 10.0, result["test_error"]  # chance is 75%
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["test_error"] == result["test_error"] and saved["parameters"] > 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv", newline="")))
    assert {r["phase"] for r in rows} == {"train", "test"}
    assert all(r["theta_std"] != "" for r in rows if r["phase"] == "train")  # theta statistics logged
    assert (tmp_path / "run" / "config.toml").is_file()


def test_resume_gives_identical_losses_and_weights(tmp_path):
    cfg = toy_config(optim={"iterations": 30}, run={"log_every": 1, "checkpoint_every": 7})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    stopped = fit(cfg, tmp_path / "b", progress=False, datasets=toy_datasets(), stop_after=14)
    assert stopped == {"stopped": True, "step": 14, "out": str(tmp_path / "b")}
    # a fresh process state: scramble every RNG the run draws from before resuming
    torch.manual_seed(1234)
    fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    assert _train_losses(tmp_path / "a") == _train_losses(tmp_path / "b")
    a = ckpt.load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_experiment(tmp_path):
    cfg = toy_config(optim={"iterations": 10})
    fit(cfg, tmp_path / "run", progress=False, datasets=toy_datasets(), stop_after=5)
    other = toy_config(optim={"iterations": 10, "lr": 0.02})
    with pytest.raises(ConfigError, match="optim.lr"):
        fit(other, tmp_path / "run", resume=True, progress=False, datasets=toy_datasets())


def test_time_limit_stops_and_still_evaluates(tmp_path):
    cfg = toy_config(optim={"iterations": 10_000}, run={"time_limit": 0.02})  # 1.2 s
    result = fit(cfg, tmp_path / "run", progress=False, datasets=toy_datasets())
    assert not result["completed"] and 0 < result["steps"] < 10_000
    assert ckpt.load_checkpoint(tmp_path / "run" / "last.pt")["step"] == result["steps"]


def test_identity_regulariser_and_bound_run(tmp_path):
    cfg = toy_config(model={"bound": 0.5}, optim={"iterations": 10, "identity_weight": 1.0, "grad_clip": 1.0})
    result = fit(cfg, tmp_path / "run", progress=False, datasets=toy_datasets())
    assert result["steps"] == 10


def test_evaluate_counts_errors():
    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[5.0, 0.0, 0.0, 0.0]]).expand(x.shape[0], 4)

    _, test = toy_datasets()
    res = evaluate(Const(), test, batch_size=50)
    expected = 100.0 * float((test.labels != 0).float().mean())
    assert res["n"] == len(test) and res["error"] == pytest.approx(expected)


def test_progress_lines_without_tqdm(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    fit(toy_config(optim={"iterations": 10}), tmp_path / "run", datasets=toy_datasets())
    out = capsys.readouterr().out
    assert "parameters" in out and "train 10/10" in out and "img/s" in out and "test error" in out


def test_time_clock_schedule_ends_on_time(tmp_path):
    cfg = toy_config(
        optim={"iterations": 20, "clock": "time", "decay": "linear", "warmup": 2},
        run={"time_limit": 0.02, "log_every": 1},
    )
    result = fit(cfg, tmp_path / "run", progress=False, datasets=toy_datasets())
    assert result["completed"]  # by time, a run is complete when its minutes are used
    rows = [r for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv", newline="")) if r["phase"] == "train"]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[-1] < 0.15 * max(lrs)  # the linear decay reached (nearly) zero with the time budget


def test_time_clock_needs_a_time_limit():
    with pytest.raises(ConfigError, match="run.time_limit"):
        fit(toy_config(optim={"clock": "time"}), None, progress=False, datasets=toy_datasets())


def test_train_steps_needs_a_resolved_config_and_a_budget_for_the_time_clock():
    cfg = toy_config(optim={"clock": "time"}, run={"time_limit": 1.0})
    state = new_state(resolve(cfg), task_of(cfg), toy_datasets()[0], torch.device("cpu"))
    with pytest.raises(ConfigError, match="optim.clock = 'time' follows a time budget"):
        train_steps(state, 1)  # no time_limit_s given: nothing for the schedule to follow
    state.cfg = cfg  # as loaded: the schedule's fields (momentum, decay, ...) still unset
    with pytest.raises(ConfigError, match="optim.momentum, .* unset: resolve the config first"):
        train_steps(state, 1, time_limit_s=60.0)
    assert state.step == 0
