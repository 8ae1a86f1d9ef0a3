"""The CUB experiment on the training engine (torchstn.experiments.cub, .task): its schedules, batches drawn from the
engine's generator, bitwise-exact resume, bf16, the ``torchstn cub`` and ``torchstn train`` commands end to end, and
a 2-process gloo run under torchrun, all on a generated CUB_200_2011 folder (tests/fixtures/make_cub.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchstn
from torchstn.errors import ConfigError, DataError
from torchstn.experiments import cub
from torchstn.experiments.cli import main as cli
from torchstn.experiments.cub.data import CUBDataset, crop_params
from torchstn.experiments.cub.models import list_backbones, register_backbone, tiny_backbone
from torchstn.experiments.cub.task import CUB_PAPER, CUBTask
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.config import from_dict, resolve
from torchstn.experiments.engine.data import batch_indices
from torchstn.experiments.engine.schedules import SCHEDULES
from torchstn.experiments.engine.trainer import fit

pytest.importorskip("PIL")
pytest.importorskip("numpy")  # the fixture writer uses Image.fromarray

from tests.fixtures import make_cub  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

REPO = Path(__file__).resolve().parents[3]
SMALL = [
    "--backbone",
    "tiny",
    "--size",
    "32",
    "--part-size",
    "16",
    "--loc-size",
    "16",
    "--schedule",
    "smoke",
    "--set",
    "run.threads=1",
    "--workers",
    "0",
    "--quiet",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_cub.make_cub(tmp_path_factory.mktemp("cub"))[0]


def _config(root, iterations=6, workers=2, **run):
    overrides = [f"optim.iterations={iterations}", "run.log_every=1", "run.checkpoint_every=100", "run.threads=1"]
    return cub.train_config(
        root,
        size=32,
        schedule="smoke",
        workers=workers,
        overrides=overrides + [f"run.{k}={v}" for k, v in run.items()],
        model_options={"part_size": 16, "loc_size": 16},
    )


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed_s")} for r in csv.DictReader(f)]


def test_the_schedules_are_engine_presets():
    paper = SCHEDULES.get("cub_paper")
    assert paper == CUB_PAPER and cub.SCHEDULES == {"paper": "cub_paper", "smoke": "cub_smoke"}
    assert (paper["optimizer"], paper["lr"], paper["momentum"], paper["weight_decay"], paper["batch_size"]) == (
        "sgd",
        0.1,
        0.9,
        1e-5,
        32,
    )
    assert (paper["iterations"], paper["lr_steps"], paper["gamma"], paper["loc_lr_mult"]) == (
        30_000,
        (10_000, 20_000, 25_000),
        0.1,
        1e-4,
    )
    assert (paper["decay"], paper["warmup"], paper["clock"], paper["identity_weight"]) == ("step", 0, "steps", 0.0)
    smoke = SCHEDULES.get("cub_smoke")
    assert (smoke["lr"], smoke["batch_size"], smoke["iterations"], smoke["lr_steps"], smoke["loc_lr_mult"]) == (
        0.01,
        4,
        10,
        (8,),
        1e-2,
    )


def test_batches_come_from_the_given_generator_alone(root):
    data = CUBDataset(root, "train", size=32, workers=0)
    assert data.image_shape == (3, 32, 32) and data.num_classes == 3
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    x, y = data.batch(torch.tensor([2, 0, 1, 2]), g)
    after = g.get_state()
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [data.index.labels[data.items[i]] for i in (2, 0, 1, 2)]
    threaded = CUBDataset(root, "train", size=32, workers=3)
    torch.manual_seed(1)  # the global RNG plays no part
    x2, y2 = threaded.batch(torch.tensor([2, 0, 1, 2]), torch.Generator().manual_seed(5))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    replay = torch.Generator().manual_seed(5)
    params = crop_params(4, replay)
    assert torch.equal(replay.get_state(), after)  # the batch drew its crops and flips, nothing more
    assert all(torch.equal(x[j], data.sample(i, params[j])[0]) for j, i in enumerate((2, 0, 1, 2)))
    other, _ = data.batch(torch.tensor([2, 0, 1, 2]), torch.Generator().manual_seed(6))
    assert not torch.equal(x, other)
    test = CUBDataset(root, "test", size=32)
    xt, _ = test.batch(torch.arange(3))
    assert torch.equal(xt[1], test.sample(1)[0]) and torch.equal(xt, test.batch(torch.arange(3))[0])  # central


def test_resume_is_bitwise_exact(root, tmp_path):
    cfg = _config(root)
    full = fit(cfg, tmp_path / "a", progress=False)
    assert fit(cfg, tmp_path / "b", progress=False, stop_after=3)["step"] == 3
    torch.manual_seed(99)  # what a fresh process would have: the resume must not depend on it
    resumed = fit(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = (ckpt.load_checkpoint(tmp_path / d / "last.pt") for d in "ab")
    assert a["step"] == b["step"] == 6 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b") and len(_rows(tmp_path / "a")) == 7  # 6 train, 1 test
    assert (full["test_accuracy"], full["test_loss"]) == (resumed["test_accuracy"], resumed["test_loss"])
    start = CUBTask(cfg).build_model((3, 32, 32), 3).state_dict()
    assert any(not torch.equal(start[k], a["model"][k]) for k in start if k.endswith("weight"))  # it trained


def test_bf16_trains_a_few_steps(root, tmp_path, monkeypatch):
    seen = set()
    build = CUBTask.build_model

    def build_and_watch(self, *args):
        model = build(self, *args)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda _m, _inp, out: seen.add(out.dtype))
        return model

    monkeypatch.setattr(CUBTask, "build_model", build_and_watch)
    result = fit(_config(root, iterations=3, amp="bf16"), tmp_path / "run", progress=False)
    losses = [float(r["loss"]) for r in _rows(tmp_path / "run") if r["phase"] == "train"]
    assert torch.bfloat16 in seen and result["amp"] == "bf16"
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses) and math.isfinite(result["test_loss"])


def test_the_cub_command_trains_evaluates_and_shows(root, tmp_path, capsys):
    st = tmp_path / "st"
    assert cli(["cub", "train", "--root", str(root), "--out", str(st), *SMALL, "--set", "iterations=3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 3 and result["test_images"] == 6 and 0 <= result["test_accuracy"] <= 1
    saved = json.loads((st / "result.json").read_text())
    assert saved["config"]["task"]["name"] == "cub" and saved["config"]["optim"]["schedule"] == "cub_smoke"
    assert sorted(p.name for p in st.iterdir()) == ["config.toml", "last.pt", "metrics.csv", "result.json"]
    assert cli(["cub", "eval", "--checkpoint", str(st / "last.pt"), "--workers", "0"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 6 and res["accuracy"] == pytest.approx(result["test_accuracy"]) and res["split"] == "test"
    assert cli(["cub", "show", "--checkpoint", str(st), "--out", str(tmp_path / "parts.png"), "-n", "4"]) == 0
    assert (tmp_path / "parts.png").stat().st_size > 0
    assert cli(["cub", "train", "--root", str(root), "--out", str(st), *SMALL]) == 2  # holds a run
    assert "already holds a run" in capsys.readouterr().err
    assert (
        cli(["cub", "train", "--root", str(root), "--out", str(st), *SMALL, "--set", "iterations=3", "--resume"]) == 0
    )
    cnn = tmp_path / "cnn"
    assert (
        cli(
            [
                "cub",
                "train",
                "--root",
                str(root),
                "--out",
                str(cnn),
                "--model",
                "cub_cnn",
                *SMALL,
                "--set",
                "iterations=3",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli(["cub", "show", "--checkpoint", str(cnn / "last.pt"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no spatial transformers" in capsys.readouterr().err


def test_a_saved_run_needs_no_weights_file_and_keeps_its_exclusions(root, tmp_path):
    torch.save(tiny_backbone()[0].state_dict(), tmp_path / "w.pt")
    (tmp_path / "overlap.txt").write_text("1\n")  # image 1 (a training image) is left out
    cub.train(
        root,
        tmp_path / "run",
        size=32,
        schedule="smoke",
        overrides=["iterations=3", "run.threads=1"],
        model_options={"backbone": "tiny", "weights": str(tmp_path / "w.pt"), "part_size": 16, "loc_size": 16},
        exclude=tmp_path / "overlap.txt",
        workers=0,
        log=None,
    )
    (tmp_path / "w.pt").unlink()
    (tmp_path / "overlap.txt").unlink()
    model, meta = cub.model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert meta["exclude"] == (1,) and meta["size"] == 32 and not model.training
    assert cub.evaluate(tmp_path / "run", split="train", workers=0)["n"] == 5  # 6 training images less image 1
    with pytest.raises(DataError, match="w.pt: weights file"):  # training again does need it
        cub.train(
            root,
            tmp_path / "again",
            size=32,
            schedule="smoke",
            model_options={"weights": str(tmp_path / "w.pt")},
            log=None,
        )


def test_torchstn_train_runs_a_cub_config(root, tmp_path, capsys):
    toml = tmp_path / "cub.toml"
    toml.write_text(
        f'[model]\nname = "cub_cnn"\n\n[data]\nvariant = "cub"\nroot = "{root.as_posix()}"\n\n'
        '[optim]\nschedule = "cub_smoke"\niterations = 3\n\n[run]\nthreads = 1\n\n'
        '[task]\nname = "cub"\nsize = 32\nworkers = 0\n'
    )
    assert cli(["train", str(toml), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "test error" in capsys.readouterr().out
    assert cli(["eval", str(tmp_path / "run")]) == 0
    assert "on the fixed cub test set" in capsys.readouterr().out


def test_config_errors_are_clear(root, tmp_path):
    assert from_dict({"task": {"name": "cub"}}).data.variant == "cub"  # the task's one dataset, unless spelled out
    with pytest.raises(ConfigError, match=r"data.variant must be one of \['cub'\]"):
        from_dict({"task": {"name": "cub"}, "data": {"variant": "RTS"}})
    cfg = resolve(
        from_dict({"data": {"variant": "cub"}, "model": {"transform": "affine"}, "task": {"name": "cub", "scale": 2.0}})
    )
    with pytest.raises(ConfigError) as info:
        CUBTask(cfg)
    assert all(
        s in str(info.value)
        for s in (
            "model.name must be one of ['cub_cnn', 'cub_st_cnn']",
            "model.transform: not used by task 'cub'",
            "task.scale must be in (0, 1]",
        )
    )
    with pytest.raises(ConfigError, match="data.root must name the CUB_200_2011 folder"):
        CUBTask(
            resolve(from_dict({"data": {"variant": "cub"}, "model": {"name": "cub_cnn"}, "task": {"name": "cub"}}))
        ).datasets()
    with pytest.raises(ConfigError, match="Did you mean 'task.num_parts'"):
        cub.train_config(root, model_options={"num_part": 4})
    with pytest.raises(ConfigError, match="Did you mean 'optim.lr_steps'"):
        cub.train_config(root, overrides=["lr_step=3"])
    with pytest.deprecated_call(match=r"optim.lr_steps=\[2, 4\]"):
        cfg = cub.train_config(root, schedule="smoke", overrides=["iterations=6", "lr_steps=(2, 4)"])
    assert resolve(cfg).optim.lr_steps == (2, 4)
    name = "_test_pretrained_tiny"  # as in test_models.py
    if name not in list_backbones():
        register_backbone(name)(lambda width=4: tiny_backbone(width))
    with pytest.raises(ConfigError, match="weights=PATH"):  # a pretrained backbone without weights, before training
        fit(cub.train_config(root, size=32, model_options={"backbone": name}), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 ARGS`` (gloo on the CPU) on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = Path(torchstn.__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(src), str(REPO)]))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)


def test_two_processes_under_torchrun(root, tmp_path):
    """Each rank crops its half of the global batch with its own generator, and the checkpoint holds both."""
    out = tmp_path / "ddp"
    proc = _torchrun(
        ["-m", "torchstn", "cub", "train", "--root", str(root), "--out", str(out), *SMALL, "--set", "iterations=3"]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(proc.stdout)["processes"] == 2  # rank 0 alone prints the result
    saved = ckpt.load_checkpoint(out / "last.pt")
    assert saved["world_size"] == 2 and saved["step"] == 3
    states = saved["rng"]["data_ranks"]
    train = CUBDataset(root, "train", size=32)
    for rank in (0, 1):
        g = distributed.rank_generator(0, rank)
        for step in range(3):
            train.batch(distributed.shard(batch_indices(step, 4, len(train), 0), rank, 2), g)
        assert torch.equal(g.get_state(), states[rank]), rank
    assert not torch.equal(states[0], states[1])
