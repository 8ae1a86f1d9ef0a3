import csv
import random
from pathlib import Path

import pytest
import torch

from torchstn.errors import DataError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.trainer import fit

from ._toy import toy_config, toy_datasets


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    real_save = torch.save

    def torn_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip file")  # a partial write, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_interrupt_during_training_checkpoint_leaves_last_good_one(tmp_path, monkeypatch):
    cfg = toy_config(optim={"iterations": 20}, run={"checkpoint_every": 5})
    calls = {"n": 0}
    real_save = ckpt.torch.save

    def save_then_crash(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            Path(f).write_bytes(b"garbage")  # the partial file a kill leaves behind
            raise OSError("killed mid-write")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save_then_crash)
    with pytest.raises(OSError, match="killed mid-write"):
        fit(cfg, tmp_path / "run", progress=False, datasets=toy_datasets())
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 10
    result = fit(cfg, tmp_path / "run", resume=True, progress=False, datasets=toy_datasets())
    assert result["steps"] == 20
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:  # rows the crashed run logged after step 10 are gone
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["phase"] == "train"]
    assert steps == [5, 10, 15, 20]


def test_checkpoint_contents_load_weights_only(tmp_path):
    fit(toy_config(optim={"iterations": 5}), tmp_path / "run", progress=False, datasets=toy_datasets())
    payload = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"config", "model", "optimizer", "scheduler", "step", "rng", "version", "in_shape", "num_classes"} <= set(
        payload
    )
    assert payload["config"]["model"]["name"] == "st_fcn" and payload["step"] == 5 and payload["final"]
    assert payload["version"]["torchstn"] and isinstance(payload["rng"]["data"], torch.Tensor)


def test_rng_state_round_trip():
    g = torch.Generator().manual_seed(3)
    state = ckpt.get_rng_state(g)
    expected = (torch.rand(3), random.random(), torch.rand(2, generator=g))
    torch.manual_seed(99)
    random.seed(99)
    g.manual_seed(99)
    ckpt.set_rng_state(state, g)
    got = (torch.rand(3), random.random(), torch.rand(2, generator=g))
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_damaged_or_missing_checkpoint_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        ckpt.load_checkpoint(tmp_path / "bad.pt")
