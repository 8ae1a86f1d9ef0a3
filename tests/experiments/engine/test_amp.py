"""Mixed precision (``run.amp``): bf16 autocast training on the CPU, its checks, and float32 where it matters."""

import csv
import math

import pytest
import torch

from torchstn.errors import ConfigError
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine import classify
from torchstn.experiments.engine.config import from_dict
from torchstn.experiments.engine.trainer import evaluate, fit
from torchstn.functional.projective import projective_grid
from torchstn.functional.tps import lattice, tps_grid, tps_transform_points
from torchstn.nn import SpatialTransformer

from ._toy import toy_config, toy_datasets

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def _losses(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["phase"] == "train"]


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_bf16_trains_st_cnn(tmp_path, monkeypatch, transform):
    seen = set()  # dtypes the linear layers produce during the run
    build = classify.model_from_config

    def build_and_watch(*args, **kwargs):
        model = build(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.register_forward_hook(lambda _m, _inp, out: seen.add(out.dtype))
        return model

    monkeypatch.setattr(classify, "model_from_config", build_and_watch)
    cfg = from_dict(
        {
            "model": {"name": "st_cnn", "transform": transform, "channels": [8, 8]},
            "data": {"variant": "plain", "synthetic": 300},
            "optim": {
                "optimizer": "adam",
                "lr": 3e-3,
                "batch_size": 32,
                "iterations": 30,
                "warmup": 0,
                "decay": "constant",
            },
            "run": {"threads": 1, "log_every": 5, "checkpoint_every": 0, "amp": "bf16"},
        }
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    losses = _losses(tmp_path / "run")
    assert torch.bfloat16 in seen  # autocast was on
    assert result["amp"] == "bf16" and all(math.isfinite(v) for v in losses) and math.isfinite(result["test_loss"])
    assert losses[-1] < 0.6 * losses[0], losses  # 2.3 (chance) -> about 0.5 in 30 steps


def test_bf16_resume_is_exact(tmp_path):
    cfg = toy_config(optim={"iterations": 12}, run={"amp": "bf16", "log_every": 1, "checkpoint_every": 4})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    fit(cfg, tmp_path / "b", progress=False, datasets=toy_datasets(), stop_after=6)
    torch.manual_seed(1234)
    fit(cfg, tmp_path / "b", resume=True, progress=False, datasets=toy_datasets())
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    a, b = (ckpt.load_checkpoint(tmp_path / d / "last.pt")["model"] for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # amp changes what is computed: resuming with another setting is refused
    with pytest.raises(ConfigError, match="run.amp"):
        fit(
            toy_config(optim={"iterations": 12}, run={"amp": "off", "log_every": 1, "checkpoint_every": 4}),
            tmp_path / "b",
            resume=True,
            progress=False,
            datasets=toy_datasets(),
        )


def test_amp_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="fp16.*needs CUDA.*bf16"):
        fit(toy_config(run={"amp": "fp16"}), tmp_path / "a", progress=False, datasets=toy_datasets())
    with pytest.raises(ConfigError, match="run.amp must be one of.*Did you mean 'bf16'"):
        fit(toy_config(run={"amp": "BF16"}), tmp_path / "b", progress=False, datasets=toy_datasets())


def test_evaluate_under_bf16_is_close_to_float32():
    torch.manual_seed(0)
    model = classify.model_from_config(toy_config(), (1, 12, 12), 4)
    _, test = toy_datasets()
    full, half = evaluate(model, test), evaluate(model, test, amp="bf16")
    assert half["n"] == full["n"] and half["loss"] == pytest.approx(full["loss"], rel=0.05)


# -- float32 where precision matters, inside autocast ----------------------------------------------------------------
def test_projective_division_runs_in_float32_under_autocast():
    H = torch.eye(3).repeat(2, 1, 1)
    H[:, 2, 0] = torch.tensor([0.3, 1.5])  # the second one puts part of the image behind the horizon
    ref = projective_grid(H, (42, 42))
    with BF16:
        grid = projective_grid(H, (42, 42))
    assert grid.dtype == torch.float32 and torch.isfinite(grid).all()
    torch.testing.assert_close(grid, ref, rtol=1e-6, atol=1e-6)


def test_tps_grid_runs_in_float32_under_autocast():
    noise = torch.randn(2, 16, 2, generator=torch.Generator().manual_seed(0))
    src = lattice(4, dtype=torch.float32).unsqueeze(0) + 0.05 * noise  # (2, 16, 2)
    ref = tps_grid(src, (42, 42), 4)
    with BF16:
        grid = tps_grid(src, (42, 42), 4)
    assert grid.dtype == torch.float32
    torch.testing.assert_close(grid, ref, rtol=1e-5, atol=1e-5)  # bfloat16 gives errors of ~7e-3 (0.15 px)


def test_tps_solve_runs_in_float32_under_autocast():
    noise = torch.randn(1, 9, 2, generator=torch.Generator().manual_seed(0))
    src = lattice(3, dtype=torch.float32).unsqueeze(0) + 0.05 * noise  # (1, 9, 2)
    pts = torch.rand(1, 50, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ref = tps_transform_points(src, pts, 3)
    with BF16:
        out = tps_transform_points(src, pts, 3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_st_grid_stays_float32_under_autocast(transform):
    st = SpatialTransformer(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(42 * 42, 8)), transform, in_features=8
    )
    g = torch.Generator().manual_seed(0)
    theta = (st.family.identity() + 0.05 * torch.randn(2, st.family.identity().numel(), generator=g)).bfloat16()
    U = torch.rand(2, 1, 42, 42, generator=g)
    ref = st.warp(U, theta.float())  # the same theta, grid and sampling in float32
    with BF16:
        V = st.warp(U, theta)
    torch.testing.assert_close(V.float(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("saved", ["off", "bf16"])
def test_auto_resume_keeps_the_saved_mode(tmp_path, saved):
    """A resume that leaves run.amp on its default ("auto") continues in the mode the run was saved with, whatever
    "auto" means on this machine: the losses are those of the uninterrupted run."""
    run = {"log_every": 1, "checkpoint_every": 4}
    cfg = toy_config(optim={"iterations": 10}, run={**run, "amp": saved})
    fit(cfg, tmp_path / "a", progress=False, datasets=toy_datasets())
    fit(cfg, tmp_path / "b", progress=False, datasets=toy_datasets(), stop_after=5)
    result = fit(
        toy_config(optim={"iterations": 10}, run=run),
        tmp_path / "b",
        resume=True,
        progress=False,
        datasets=toy_datasets(),
    )
    assert result["amp"] == saved
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_auto_amp_follows_the_hardware_and_the_task():
    from torchstn.experiments.engine.config import resolve_run
    from torchstn.nn import native_bf16

    cpu = from_dict({"run": {"device": "cpu"}})
    assert resolve_run(cpu).amp == ("bf16" if native_bf16("cpu") else "off")
    unchecked = from_dict({"task": {"name": "svhn"}, "data": {"variant": "svhn"}})
    assert resolve_run(unchecked).amp == "off"  # the task's accuracy was not checked in bfloat16
    assert resolve_run(from_dict({"run": {"amp": "off"}})).amp == "off"
