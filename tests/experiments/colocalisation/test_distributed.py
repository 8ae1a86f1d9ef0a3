"""Co-localisation under ``torchrun``: 2 CPU processes (gloo) train a tiny case with ``torchstn train``.

Each process takes its half of the step's images (the engine's ``shard`` of ``batch_indices``), draws its crops from
its own generator and computes the loss over the ordered pairs within its half; DDP averages the two gradients. The
test replays exactly that in one process and must land on the same weights (up to the rounding of the all-reduce).
"""

import csv
import json
from pathlib import Path

import pytest
import torch

from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import distributed
from torchstn.experiments.engine.config import resolve
from torchstn.experiments.engine.config_io import load_config
from torchstn.experiments.engine.data import batch_indices
from torchstn.experiments.engine.trainer import new_state, task_of

from ..engine.launch import torchrun
from .conftest import SYNTHETIC

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(encoder_run: Path) -> str:
    return f"""
[data]
variant = "colocalisation"
synthetic = {SYNTHETIC}

[optim]
schedule = "colocalisation"
iterations = 6
batch_size = 16

[run]
threads = 1
log_every = 2
checkpoint_every = 3

[task]
name = "colocalisation"
digit = 3
n = 16
encoder = "{encoder_run.as_posix()}"
"""


def _replay_two_ranks(cfg, steps: int) -> tuple[dict, dict, list[float], list[torch.Tensor]]:
    """One process doing what 2 DDP ranks do: the initial and final weights, each step's loss (the mean of the two
    halves'), and each rank's generator state at the end."""
    cfg = resolve(cfg)
    task = task_of(cfg)
    train_set, _ = task.datasets(test=False)
    state = new_state(cfg, task, train_set, torch.device("cpu"))
    model, bs, seed = state.model, cfg.optim.batch_size, cfg.run.seed
    start = {k: v.clone() for k, v in model.state_dict().items()}
    generators = [distributed.rank_generator(seed, r) for r in (0, 1)]
    losses = []
    for step in range(steps):
        task.on_step(model, step)
        state.optimizer.zero_grad(set_to_none=True)
        idx = batch_indices(step, bs, len(train_set), seed)
        halves = []
        for rank in (0, 1):
            inputs, targets = task.batch(train_set, distributed.shard(idx, rank, 2), generators[rank])
            loss = task.loss(task.forward(model, inputs), targets)  # the pairs within this rank's half
            (loss / 2).backward()  # DDP: the mean of the ranks' gradients
            halves.append(float(loss.detach()))
        state.optimizer.step()
        state.scheduler.step()
        losses.append(sum(halves) / 2)
    return start, model.state_dict(), losses, [g.get_state() for g in generators]


@pytest.mark.parametrize("letter", [False, True], ids=["every_pair", "random_pairs_window_patches"])
def test_two_processes_train_a_case_on_the_pairs_within_their_halves(encoder_run, tmp_path, letter):
    config = tmp_path / "coloc.toml"
    # the letter (issue 18): each rank draws 5 random pairs in its half and window-sized patches from its generator
    config.write_text(_config(encoder_run) + ('pairs = 5\nrand_size = "window"\n' if letter else ""))
    proc, _ = torchrun(["-m", "torchstn", "train", str(config), "--out", str(tmp_path / "ddp")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes (8 images each)" in proc.stdout and proc.stdout.count("co-localisation of digit 3") == 1
    assert ("5 random pairs per step, window-sized" in proc.stdout) == letter
    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["processes"] == 2 and result["steps"] == 6 and 0.0 <= result["test_rate"] <= 1.0

    start, weights, losses, states = _replay_two_ranks(load_config(str(config)), 6)
    saved = ckpt.load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert saved["world_size"] == 2
    for rank in (0, 1):  # each rank drew its crops from its own generator, and both were saved
        assert torch.equal(saved["rng"]["data_ranks"][rank], states[rank]), rank
    travel = max(float((start[k] - weights[k]).abs().max()) for k in weights)
    diff = max(float((saved["model"][k] - weights[k]).abs().max()) for k in weights)
    assert travel > 1e-3, travel  # the weights moved ...
    assert diff < 1e-5, diff  # ... along the path of the two halves' mean gradient
    with open(tmp_path / "ddp" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["phase"] == "train"]
    assert [r["step"] for r in rows] == ["2", "4", "6"]
    for r, (a, b) in zip(rows, zip(losses[::2], losses[1::2])):  # the logged loss: both halves, over 2 steps
        assert float(r["loss"]) == pytest.approx((a + b) / 2, rel=1e-4)
