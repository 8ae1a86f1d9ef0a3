"""DistributedDataParallel on the CPU (gloo, 2 processes started by torchrun as subprocesses).

What is comparable: with the ``plain`` variant the training images do not depend on any generator, so 2 ranks that
share each global batch must end where one process ends (up to the float rounding of the gradient average). With
re-distorting data each rank draws its own distortions, so the checks there are exact resume and that every rank's
generator state in the checkpoint is the one a replay of its draws gives.
"""

import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import torchstn
from torchstn.errors import ConfigError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.config_io import load_config
from torchstn.experiments.engine.data import batch_indices, data_generator
from torchstn.experiments.engine.steps import model_from_config
from torchstn.experiments.engine.trainer import fit

from ._toy import toy_config, toy_datasets

REPO = Path(__file__).resolve().parents[3]
SRC = Path(torchstn.__file__).resolve().parents[1]

CONFIG = """
[model]
name = "st_fcn"
transform = "affine"
hidden = [16, 16]

[data]
variant = "plain"   # no distortions: the training images do not depend on any generator
synthetic = 256

[optim]
optimizer = "sgd"   # plain SGD: float rounding differences stay at rounding size (Adam can magnify them)
lr = 0.1
momentum = 0.9
batch_size = 32
iterations = 8
warmup = 0
decay = "constant"
ema = 0.5           # the weight average, kept by rank 0 alone

[run]
threads = 1
amp = "off"         # float32: two processes agree with one to float32 rounding (bfloat16 would round coarser)
log_every = 2
checkpoint_every = 4
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], timeout: float = 180) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``torchrun --nproc_per_node=2 ARGS`` on a free port; returns the process and its wall time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), str(REPO)]))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return proc, time.monotonic() - t


def _train_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["phase"] == "train"]


def test_two_processes_match_one_process(tmp_path):
    """torchrun -m torchstn train: same global batch, same images, so the same weights as one process."""
    config = tmp_path / "ddp.toml"
    config.write_text(CONFIG)
    proc, _ = _torchrun(["-m", "torchstn", "train", str(config), "--out", str(tmp_path / "ddp")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("parameters (") == 1  # only rank 0 talks
    assert "2 processes (16 images each)" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "config.toml",
        "last.pt",
        "metrics.csv",
        "result.json",
    ]
    one = fit(load_config(str(config)), tmp_path / "one", progress=False)
    ddp = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert ddp["processes"] == 2 and one["processes"] == 1
    assert ddp["steps"] == one["steps"] == 8 and ddp["test_error"] == one["test_error"]

    a, b = (ckpt.load_checkpoint(tmp_path / d / "last.pt") for d in ("ddp", "one"))
    assert a["world_size"] == 2 and len(a["rng"]["data_ranks"]) == 2 and "data_ranks" not in b["rng"]
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in b["model"])
    torch.manual_seed(0)  # the initial weights, as fit makes them
    start = model_from_config(load_config(str(config)), tuple(b["in_shape"]), b["num_classes"]).state_dict()
    travel = max(float((start[k] - b["model"][k]).abs().max()) for k in b["model"])
    assert travel > 1e-2, travel  # the weights moved far ...
    assert diff < 1e-5, diff  # ... and along the same path
    assert int(a["ema"]["n_averaged"]) == int(b["ema"]["n_averaged"]) == 8
    assert max(float((a["ema"][k] - b["ema"][k]).abs().max()) for k in b["ema"]) < 1e-5  # so is their average
    # the logged loss is the global batch's (all-reduced), not rank 0's half
    ddp_rows, one_rows = _train_rows(tmp_path / "ddp"), _train_rows(tmp_path / "one")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in one_rows] == ["2", "4", "6", "8"]
    for r, s in zip(ddp_rows, one_rows):
        assert float(r["loss"]) == pytest.approx(float(s["loss"]), rel=1e-4)
        assert float(r["error"]) == pytest.approx(float(s["error"]))


_RESUME_SCRIPT = """
import os
import signal
import sys
import torch
from tests.experiments.engine._toy import toy_config, toy_datasets
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.signals import TrainingInterrupted
from torchstn.experiments.engine.trainer import fit

out = sys.argv[1]
cfg = toy_config(optim={"iterations": 12, "ema": 0.9}, run={"log_every": 1, "checkpoint_every": 4})
# three runs in one process (like `reproduce`): the first joins the process group, the others reuse it
fit(cfg, out + "/full", progress=False, datasets=toy_datasets())
assert fit(cfg, out + "/part", progress=False, datasets=toy_datasets(), stop_after=6)["step"] == 6
torch.manual_seed(1234 + distributed.rank())  # scramble what a fresh process would not have
result = fit(cfg, out + "/part", resume=True, progress=False, datasets=toy_datasets())
assert result["steps"] == 12 and result["processes"] == 2, result  # every rank gets rank 0's result

train, test = toy_datasets()
if distributed.rank() == 1:  # a SIGTERM that reaches rank 1 alone, inside its 5th iteration
    real, calls = train.batch, []

    def batch(indices, generator=None):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(indices, generator)

    train.batch = batch
try:
    fit(cfg, out + "/sig", progress=False, datasets=(train, test))
    raise AssertionError("not interrupted")
except TrainingInterrupted as e:  # on both ranks, at the same iteration
    assert (e.step, e.signum, e.saved) == (5, signal.SIGTERM, True), (e.step, e.signum, e.saved)
fit(cfg, out + "/sig", resume=True, progress=False, datasets=toy_datasets())
assert distributed.is_distributed()  # left for the exit handler to destroy
"""


def test_resume_under_ddp_is_exact_and_generators_are_per_rank(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(_RESUME_SCRIPT)
    proc, _ = _torchrun([str(script), str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    full = tmp_path / "full"
    for other in ("part", "sig"):  # stopped by stop_after, and by a signal to one rank (all ranks stop together)
        rows = [(r["step"], r["loss"]) for r in _train_rows(tmp_path / other)]
        assert [(r["step"], r["loss"]) for r in _train_rows(full)] == rows, other
        a, b = ckpt.load_checkpoint(full / "last.pt"), ckpt.load_checkpoint(tmp_path / other / "last.pt")
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), other
        assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"]), other  # rank 0's average too
    # each rank drew its distortions from its own generator, seeded from (seed, rank), and all were saved
    train, _ = toy_datasets()
    states = a["rng"]["data_ranks"]
    assert len(states) == 2 and not torch.equal(states[0], states[1])
    for rank in (0, 1):
        g = distributed.rank_generator(0, rank)
        for step in range(12):
            train.batch(distributed.shard(batch_indices(step, 32, len(train), 0), rank, 2), generator=g)
        assert torch.equal(g.get_state(), states[rank]), rank
    assert torch.equal(states[0], a["rng"]["data"])


_FAIL_SCRIPT = """
import sys
import time
from tests.experiments.engine._toy import toy_config, toy_datasets
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.steps import model_from_config
from torchstn.experiments.engine.trainer import fit

out, how = sys.argv[1], sys.argv[2]
train, test = toy_datasets()
if distributed.rank() == 1:  # rank 1 fails while drawing the batch of iteration 6
    real, calls = train.batch, []

    def batch(indices, generator=None):
        calls.append(1)
        if len(calls) == 6:
            if how == "hang":
                time.sleep(600)
            raise RuntimeError("rank 1 fails on purpose")
        return real(indices, generator)

    train.batch = batch
cfg = toy_config(optim={"iterations": 12}, run={"checkpoint_every": 2, "dist_timeout": 0.1})  # 6 s
fit(cfg, out, progress=False, datasets=(train, test))
"""


@pytest.mark.parametrize("how", ["raise", pytest.param("hang", marks=pytest.mark.slow)])
def test_a_failing_rank_fails_the_job_and_the_checkpoint_resumes(tmp_path, how):
    script = tmp_path / "fail.py"
    script.write_text(_FAIL_SCRIPT)
    proc, wall = _torchrun([str(script), str(tmp_path / "run"), how], timeout=120)
    assert proc.returncode != 0
    if how == "raise":  # rank 0's collective sees the dead peer at once
        assert "rank 1 fails on purpose" in proc.stderr
    else:  # rank 0 gives up after run.dist_timeout
        assert re.search(r"(?i)timed? ?out", proc.stderr), proc.stderr[-3000:]
    assert wall < 60, wall  # no hang
    saved = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["step"] == 4 and saved["world_size"] == 2
    # the last checkpoint resumes (here in one process: it warns that the distortions now differ)
    log = tmp_path / "log.txt"
    with open(log, "w") as stream:
        result = fit(
            toy_config(optim={"iterations": 12}, run={"checkpoint_every": 2, "dist_timeout": 0.1}),
            tmp_path / "run",
            resume=True,
            stream=stream,
            datasets=toy_datasets(),
        )
    assert result["steps"] == 12 and result["processes"] == 1
    assert "resuming" in log.read_text() and "checkpoint's run had 2" in log.read_text()


def test_global_batch_must_split_evenly():
    assert distributed.split_batch(32, 2) == 16
    with pytest.raises(ConfigError, match="global batch.*divisible by 3"):
        distributed.split_batch(32, 3)
    assert distributed.shard(torch.arange(6), 2, 3).tolist() == [4, 5]


def test_rank_generators():
    assert torch.equal(distributed.rank_generator(5, 0).get_state(), data_generator(5).get_state())
    draws = [torch.rand(4, generator=distributed.rank_generator(5, r)) for r in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    again = torch.rand(4, generator=distributed.rank_generator(5, 1))
    assert torch.equal(draws[1], again)


def test_rng_state_per_rank_round_trip():
    gens = [distributed.rank_generator(0, r) for r in range(2)]
    rng = ckpt.get_rng_state(gens[0], rank_states=[g.get_state() for g in gens])
    for r in (0, 1):
        g = torch.Generator().manual_seed(99)
        ckpt.set_rng_state(rng, g, rank=r)
        assert torch.equal(g.get_state(), gens[r].get_state())
    g = torch.Generator().manual_seed(99)
    before = g.get_state()
    ckpt.set_rng_state(rng, g, rank=2)  # more processes than the run had: rank 2 keeps its fresh generator
    assert torch.equal(g.get_state(), before)


def test_one_process_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    device = distributed.setup("cpu")
    assert device == torch.device("cpu") and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.all_reduce_sum([1.0, 2.0], device) == [1.0, 2.0]
    assert distributed.broadcast_float(3.5, device) == 3.5
    assert distributed.on_main(lambda: 7)() == 7
    distributed.teardown()  # nothing to destroy


def test_launcher_settings_are_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.rank() == 1 and not distributed.is_main()  # the launcher's rank before the group exists
    assert distributed.on_main(lambda: 7)() is None
    with pytest.raises(ConfigError, match="cuda:LOCAL_RANK"):
        distributed.setup("cuda:1")
    with pytest.raises(ConfigError, match="dist_timeout"):
        distributed.setup("cpu", timeout_min=0)
    assert not torch.distributed.is_initialized()


def test_fit_one_process_is_unchanged_by_the_ddp_code(tmp_path):
    """A one-process run still writes a single data-generator state, rank 0's, which is the old generator."""
    fit(toy_config(optim={"iterations": 4}), tmp_path / "run", progress=False, datasets=toy_datasets())
    saved = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")
    g = data_generator(0)
    train, _ = toy_datasets()
    for step in range(4):
        train.batch(batch_indices(step, 32, len(train), 0), generator=g)
    assert torch.equal(saved["rng"]["data"], g.get_state()) and saved["world_size"] == 1
