"""The engine's CPU speed settings: channels-last weights on request, the held heap, the fast first conv."""

from __future__ import annotations

import csv

import pytest
import torch

from torchstn.errors import ConfigError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import trainer
from torchstn.experiments.engine.trainer import fit
from torchstn.nn import FewChannelConv2d

from ._toy import toy_config, toy_datasets


def _losses(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["phase"] == "train"]


def test_channels_last_trains_the_same_function_and_resumes(tmp_path, monkeypatch):
    seen = []
    real = trainer.to_channels_last
    monkeypatch.setattr(trainer, "to_channels_last", lambda m: seen.append(m) or real(m))
    run = {"amp": "off", "log_every": 1, "checkpoint_every": 4}
    base = toy_config(
        model={"name": "cnn", "transform": None, "channels": [4, 4], "hidden": None}, optim={"iterations": 8}, run=run
    )
    fit(base, tmp_path / "plain", progress=False, datasets=toy_datasets())
    assert seen == []
    cl = toy_config(
        model={"name": "cnn", "transform": None, "channels": [4, 4], "hidden": None},
        optim={"iterations": 8},
        run={**run, "memory_format": "channels_last"},
    )
    result = fit(cl, tmp_path / "cl", progress=False, datasets=toy_datasets())
    assert len(seen) == 1 and result["memory_format"] == "channels_last"
    a, b = _losses(tmp_path / "plain"), _losses(tmp_path / "cl")
    assert a != [] and max(abs(x - y) for x, y in zip(a, b)) < 1e-3  # the same function, rounded differently
    fit(cl, tmp_path / "cl2", progress=False, datasets=toy_datasets(), stop_after=4)
    fit(cl, tmp_path / "cl2", resume=True, progress=False, datasets=toy_datasets())
    assert _losses(tmp_path / "cl2") == b  # resumed exactly
    # the layout is not what a run computes: a resume may change it
    fit(base, tmp_path / "cl2", resume=True, progress=False, datasets=toy_datasets())


def test_memory_format_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="run.memory_format must be one of.*Did you mean 'channels_last'"):
        fit(toy_config(run={"memory_format": "channel_last"}), tmp_path / "a", progress=False, datasets=toy_datasets())


def test_a_cpu_run_holds_freed_memory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(trainer, "hold_freed_memory", lambda: calls.append(1) or True)
    fit(toy_config(optim={"iterations": 2}), tmp_path / "a", progress=False, datasets=toy_datasets())
    assert calls == [1]


def test_the_cnn_behind_a_transformer_gets_the_fast_first_conv(tmp_path):
    """The Table 1 ST-CNN trains with a FewChannelConv2d first conv, and its checkpoint is an nn.Conv2d's."""
    model = {"name": "st_cnn", "channels": [4, 4], "hidden": None}
    cfg = toy_config(model=model, data={"synthetic": 64}, optim={"iterations": 2}, run={"checkpoint_every": 0})
    fit(cfg, tmp_path / "a", progress=False)
    from torchstn.models import build_model

    built = build_model("st_cnn", in_shape=(1, 28, 28), channels=(4, 4))
    assert isinstance(built.classifier[0], FewChannelConv2d)
    state = ckpt.load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    built.load_state_dict(state)
    plain = torch.nn.Conv2d(1, 4, 9, padding=4)
    plain.load_state_dict({k.rsplit(".", 1)[-1]: v for k, v in state.items() if k.startswith("classifier.0.")})
