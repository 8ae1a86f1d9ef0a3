"""The ``svhn`` task on the training engine: its schedules and parameter groups, its loss and sequence error, exact
resume, bf16, two processes under torchrun, and its config errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

from torchstn.errors import ConfigError, DataError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.config import from_dict, resolve
from torchstn.experiments.engine.config_io import load_config
from torchstn.experiments.engine.trainer import fit, new_state, task_of
from torchstn.experiments.svhn import SVHNTask, svhn_config
from torchstn.experiments.svhn.models import sequence_error, sequence_loss

from ..engine.launch import torchrun
from ._tiny import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread", "foreground_signals")


def _rows(run, phase=None):
    with open(run / "metrics.csv", newline="") as f:
        return [
            {k: v for k, v in r.items() if k not in ("img_per_s", "elapsed_s")}
            for r in csv.DictReader(f)
            if phase is None or r["phase"] == phase
        ]


def test_paper_schedule_and_localisation_groups(svhn_cache):
    tiny = ["model.channels=[4,4,4,4,4,4,4,4]"]
    cfg = resolve(svhn_config(str(svhn_cache), model="svhn_st_cnn_single", overrides=tiny))
    o = cfg.optim
    assert (o.optimizer, o.lr, o.momentum, o.weight_decay, o.batch_size, o.iterations) == (
        "sgd",
        0.01,
        0.9,
        5e-4,
        128,
        400_000,
    )
    assert (o.decay, o.lr_steps, o.gamma, o.loc_lr_mult, o.warmup) == (
        "step",
        (80_000, 160_000, 240_000, 320_000),
        0.1,
        0.1,
        0,
    )
    task = task_of(cfg)
    train_set, _ = task.datasets(test=False)
    state = new_state(cfg, task, train_set, torch.device("cpu"))
    rest, loc = state.optimizer.param_groups
    assert (rest["lr"], loc["lr"]) == (0.01, pytest.approx(0.001))  # the localisation nets at lr / 10
    assert rest["weight_decay"] == loc["weight_decay"] == 5e-4 and rest["momentum"] == loc["momentum"] == 0.9
    assert {id(p) for p in loc["params"]} == {id(p) for st in state.model.transformers for p in st.parameters()}
    assert len(rest["params"]) + len(loc["params"]) == len(list(state.model.parameters()))
    small = resolve(svhn_config("c", schedule="smoke", overrides=["optim.iterations=4"]))
    assert small.optim.lr_steps == (3,) and small.optim.batch_size == 16  # the step at 15 of 20 iterations: 3 of 4


def test_loss_and_sequence_error_are_todays(svhn_cache):
    task = task_of(tiny_config(svhn_cache))
    labels = torch.tensor([[1, 2, 10, 10, 10], [7, 10, 10, 10, 10], [0, 3, 4, 10, 10]])
    logits = F.one_hot(labels, 11).float() * 5
    logits[0, 2] = F.one_hot(torch.tensor(3), 11) * 5.0  # a digit after the end: the whole image is wrong
    assert task.mistakes(logits, labels) == (1, 3)
    assert torch.equal(task.loss(logits.bfloat16(), labels), sequence_loss(logits.bfloat16().float(), labels))
    model = task.build_model((3, 64, 64), 11)
    held_out = task.held_out("test")
    res = task.evaluate(model, held_out, batch_size=2, device=torch.device("cpu"))  # three batches of 2, 2, 1
    x, y = held_out.batch(torch.arange(len(held_out)))
    with torch.no_grad():
        out = model.eval()(x)
    assert res["n"] == 5 and res["error"] == pytest.approx(100 * sequence_error(out, y))
    assert res["loss"] == pytest.approx(float(sequence_loss(out, y)), rel=1e-5)


def test_resume_is_exact(svhn_cache, tmp_path):
    """Random crops (the engine's generator), dropout (torch's) and a periodic evaluation: stopped after 3 of 7
    iterations and resumed, the run ends bit for bit as the uninterrupted one."""
    cfg = tiny_config(svhn_cache, task={"crop": 54}, optim={"iterations": 7}, run={"eval_every": 4})
    a = fit(cfg, tmp_path / "a", progress=False)
    assert fit(cfg, tmp_path / "b", progress=False, stop_after=3)["stopped"]
    torch.manual_seed(1234)
    b = fit(cfg, tmp_path / "b", resume=True, progress=False)
    wa, wb = (ckpt.load_checkpoint(tmp_path / d / "last.pt")["model"] for d in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b") and len(_rows(tmp_path / "a", "test")) == 2
    assert (a["test_error"], a["test_loss"], a["test_images"]) == (b["test_error"], b["test_loss"], 2)
    c = fit(
        tiny_config(svhn_cache, task={"crop": 54}, optim={"iterations": 7}, run={"seed": 1}),
        tmp_path / "c",
        progress=False,
    )
    assert c["test_loss"] != a["test_loss"]  # the seed matters: the comparison above can fail


def test_bf16_trains_a_few_steps(svhn_cache, tmp_path, monkeypatch):
    seen = set()
    build = SVHNTask.build_model

    def build_and_watch(self, *args):
        model = build(self, *args)
        model.heads.register_forward_hook(lambda _m, _inp, out: seen.add(out.dtype))
        return model

    monkeypatch.setattr(SVHNTask, "build_model", build_and_watch)
    result = fit(
        tiny_config(svhn_cache, optim={"iterations": 4}, run={"amp": "bf16"}), tmp_path / "run", progress=False
    )
    losses = [float(r["loss"]) for r in _rows(tmp_path / "run", "train")]
    assert torch.bfloat16 in seen and result["amp"] == "bf16" and len(losses) == 4
    assert all(math.isfinite(v) for v in [*losses, result["test_loss"]])


def test_two_processes_match_one_process(svhn_cache, tmp_path):
    """``torchrun -m torchstn svhn train``: each process trains on half of every batch (gloo); without dropout or
    random crops the weights follow one process's."""
    flags = [
        "--data",
        str(svhn_cache),
        "--schedule",
        "smoke",
        "--threads",
        "1",
        "--set",
        "optim.iterations=4",
        "--set",
        "optim.batch_size=4",
        "--set",
        "model.channels=[4,4,4,4,4,4,4,4]",
        "--set",
        "task.fc=[8,8]",
        "--set",
        "task.dropout=0.0",
        "--set",
        "run.log_every=1",
    ]
    proc, _ = torchrun(["-m", "torchstn", "svhn", "train", "--out", str(tmp_path / "ddp"), *flags])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes (2 images each)" in proc.stdout and proc.stdout.count('"steps": 4') == 1
    one = fit(load_config(str(tmp_path / "ddp" / "config.toml")), tmp_path / "one", progress=False)
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert (ddp["processes"], one["processes"], ddp["steps"]) == (2, 1, 4)
    a, b = (ckpt.load_checkpoint(tmp_path / d / "last.pt") for d in ("ddp", "one"))
    assert a["world_size"] == 2 and len(a["rng"]["data_ranks"]) == 2
    torch.manual_seed(0)  # the initial weights, as fit makes them
    start = task_of(load_config(str(tmp_path / "one" / "config.toml"))).build_model((3, 64, 64), 11).state_dict()
    travel = max(float((start[k] - b["model"][k]).abs().max()) for k in b["model"])
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in b["model"])
    assert travel > 1e-3 and diff < 1e-5, (travel, diff)
    for r, s in zip(_rows(tmp_path / "ddp", "train"), _rows(tmp_path / "one", "train"), strict=True):
        assert float(r["loss"]) == pytest.approx(float(s["loss"]), rel=1e-4) and r["error"] == s["error"]


@pytest.mark.parametrize(
    "change,match",
    [
        ({"model": {"name": "svhn_cnnn"}}, "model.name must be one of .* Did you mean 'svhn_cnn'"),
        ({"model": {"st_pool": True}}, "does not use model.st_pool"),
        ({"data": {"synthetic": 10}}, "does not use data.synthetic"),
        ({"task": {"eval_split": "train"}}, "task.eval_split must be one of"),
        ({"task": {"crop": 80}}, "task.crop in 1..task.size"),
        ({"task": {"fc": [8, 8], "loc_hidden": [8]}, "model": {"name": "svhn_cnn"}}, "loc_hidden"),
    ],
)
def test_config_errors_name_the_key(svhn_cache, tmp_path, change, match):
    with pytest.raises(ConfigError, match=match):
        fit(tiny_config(svhn_cache, **change), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_missing_data_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match="data.root must name the cache folder"):
        fit(tiny_config(None), tmp_path / "a", progress=False)
    with pytest.raises(DataError, match="torchstn svhn prepare"):
        fit(tiny_config(tmp_path / "nothing"), tmp_path / "b", progress=False)
    assert from_dict({"task": {"name": "svhn"}}).data.variant == "svhn"  # the task's one dataset, unless spelled out
    with pytest.raises(ConfigError, match="data.variant must be one of \\['svhn'\\]"):
        from_dict({"task": {"name": "svhn"}, "data": {"variant": "RTS"}})
    with pytest.raises(ConfigError, match="task.size must be int"):
        from_dict({"task": {"name": "svhn", "size": "big"}, "data": {"variant": "svhn"}})
