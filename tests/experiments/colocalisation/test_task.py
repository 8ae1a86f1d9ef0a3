"""The co-localisation task on the engine: a tiny case trains through ``fit``, the window curriculum is a step hook,
the crops come from the engine's generator, exact resume (after ``stop_after`` and after a real SIGINT), bf16, the
``[task]`` options and their checks, ``torchstn train`` of a TOML with ``[task] name = "colocalisation"``."""

import csv
import json
import math
import os
import signal

import pytest
import torch

from torchstn.errors import ConfigError
from torchstn.experiments import colocalisation as coloc
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.config import resolve
from torchstn.experiments.engine.config_io import apply_overrides
from torchstn.experiments.engine.runs import load_run
from torchstn.experiments.engine.signals import TrainingInterrupted
from torchstn.experiments.engine.trainer import fit, new_state, task_of
from torchstn.nn import SpatialTransformer

from .conftest import SYNTHETIC

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(run, phase=None):
    with open(run / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed_s")} for r in csv.DictReader(f)]
    return [r for r in rows if phase is None or r["phase"] == phase]


def _assert_same_run(a, b):
    wa, wb = ckpt.load_checkpoint(a / "last.pt")["model"], ckpt.load_checkpoint(b / "last.pt")["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(a) == _rows(b)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ra.items() if k.startswith("test_")} == {
        k: v for k, v in rb.items() if k.startswith("test_")
    }


def test_a_tiny_case_trains_through_fit(tiny_case, tmp_path):
    cfg = tiny_case(steps=40, sets=["run.log_every=10"])
    result = fit(cfg, tmp_path, progress=False)
    losses = [float(r["loss"]) for r in _rows(tmp_path, "train")]  # means over steps 1-10, ..., 31-40
    assert len(losses) == 4 and losses[-1] < 0.92 * losses[0], losses
    errors = [float(r["error"]) for r in _rows(tmp_path, "train")]  # % anchors with most triplets misordered
    assert all(0.0 <= e <= 100.0 for e in errors) and errors[-1] < errors[0], errors
    assert result["steps"] == 40 and result["completed"] and result["test_images"] == 16
    assert 0.0 <= result["test_rate"] <= 1.0 and result["test_error"] == pytest.approx(100 * (1 - result["test_rate"]))
    assert {"test_mean_iou", "test_window_px", "test_centre_error_px"} <= result.keys()
    assert result["config"]["task"]["name"] == "colocalisation" and result["config"]["optim"]["lr_steps"] == [20]
    # the final windows are bounded by the fine scale (0.4 of the half-canvas: 33.6 px), which last.pt holds
    _, st, _ = load_run(tmp_path)
    assert st.head.scale.tolist() == pytest.approx([0.3, 0.4])
    assert result["test_window_px"] <= 0.4 * 84 + 1e-3


def test_the_curriculum_is_a_step_hook_and_batches_leave_the_model_alone(tiny_case):
    cfg = tiny_case(steps=20)
    task = task_of(cfg)
    train_set, _ = task.datasets(test=False)
    model = task.build_model(tuple(train_set.image_shape), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    global_rng = torch.get_rng_state()
    images, negatives = task.batch(train_set, torch.arange(16), g)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the batch changes no state
    assert torch.equal(torch.get_rng_state(), global_rng)  # nor draws from the global generator
    # the negatives are the encoded crops drawn from the given generator
    replay = torch.Generator().manual_seed(5)
    with torch.no_grad():
        assert torch.equal(negatives, task.encoder()(coloc.random_crops(images, replay)))
    assert torch.equal(g.get_state(), replay.get_state())
    for step in (0, 10, 13, 16, 20):
        task.on_step(model, step)
        assert tuple(model.head.scale.tolist()) == pytest.approx(coloc.Window().scale_at(step, 20))


def test_mistakes_are_the_anchors_with_most_triplets_misordered(tiny_case):
    task = task_of(tiny_case())
    train_set, _ = task.datasets(test=False)
    model = task.build_model(tuple(train_set.image_shape), 10)
    images, negatives = task.batch(train_set, torch.arange(16), torch.Generator().manual_seed(0))
    crops = model(images)
    loss = task.loss(crops, negatives)
    wrong, items = task.mistakes(crops, negatives)
    with torch.no_grad():
        features = task.encoder()(crops)
    share = coloc.misordered_triplets(features, negatives)
    assert items == 16 and wrong == int((share > 0.5).sum())
    assert loss.item() == pytest.approx(coloc.colocalisation_loss(features, negatives).item())
    assert task.mistakes(crops.detach().clone(), negatives) == (wrong, items)  # without the loss's features
    alike = torch.nn.functional.normalize(torch.ones_like(features), dim=1)  # every crop alike
    assert coloc.misordered_triplets(alike, -alike).tolist() == [0.0] * 16
    assert coloc.misordered_triplets(alike + torch.randn_like(alike), alike).tolist() == [1.0] * 16


def test_exact_resume_after_stop_after_and_after_a_signal(tiny_case, tmp_path, foreground_signals):
    cfg = tiny_case(steps=12)  # the zoom runs from step 6 to 9.6, the lr drops at 6
    fit(cfg, tmp_path / "full", progress=False)
    # stopped inside the zoom, between two checkpoints and two log rows
    assert fit(cfg, tmp_path / "part", progress=False, stop_after=7)["step"] == 7
    fit(cfg, tmp_path / "part", resume=True, progress=False)
    _assert_same_run(tmp_path / "full", tmp_path / "part")
    # a SIGINT arriving while the 9th batch is drawn: the iteration is finished, checkpointed, and resumed exactly
    train_set, _ = task_of(cfg).datasets(test=False)
    calls = []

    class Signalling:
        image_shape, num_classes, boxes = train_set.image_shape, train_set.num_classes, train_set.boxes

        def __len__(self):
            return len(train_set)

        def batch(self, indices, generator=None):
            calls.append(1)
            if len(calls) == 9:
                os.kill(os.getpid(), signal.SIGINT)
            return train_set.batch(indices, generator)

    with pytest.raises(TrainingInterrupted) as stopped:
        fit(cfg, tmp_path / "sig", progress=False, datasets=(Signalling(), train_set))
    assert stopped.value.step == 9
    fit(cfg, tmp_path / "sig", resume=True, progress=False)
    _assert_same_run(tmp_path / "full", tmp_path / "sig")


def test_bf16_trains_a_few_steps(tiny_case, tmp_path):
    result = fit(tiny_case(steps=6, sets=["run.amp=bf16"]), tmp_path, progress=False)
    losses = [float(r["loss"]) for r in _rows(tmp_path, "train")]
    assert result["amp"] == "bf16" and len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result["test_loss"]) and 0.0 <= result["test_rate"] <= 1.0


def test_options_and_settings_are_checked(tiny_case, tmp_path):
    cfg = tiny_case()
    for bad, match in [
        ("task.digit=12", "task.digit"),
        ("task.n=1", "task.n"),
        ("task.alpha=0", "task.alpha"),
        ("task.features=penultimat", "Did you mean 'penultimate'"),
        ("task.fine_min=0.5", "fine"),
        ("task.zoom_end=0.2", "zoom"),
        ("task.start_scale=0.9", "start_scale"),
        ("task.clutter=3", "task.clutter must be bool"),
        ("task.windw=1", "unknown key 'task.windw'"),
        ("data.variant=RTS", "data.variant must be one of \\['colocalisation'\\]"),
    ]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(cfg, [bad])
    with pytest.raises(ConfigError, match="at most task.n"):
        fit(apply_overrides(cfg, ["optim.batch_size=32"]), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="task.encoder is not set"):
        fit(apply_overrides(cfg, ["task.encoder=none"]), tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "last.pt").exists()


def test_torchstn_train_runs_a_toml_with_the_task(encoder_run, tmp_path):
    from torchstn.experiments.cli import main as cli

    toml = tmp_path / "coloc.toml"
    toml.write_text(f"""
[data]
variant = "colocalisation"
synthetic = {SYNTHETIC}

[optim]
schedule = "colocalisation"
iterations = 4
batch_size = 16

[run]
threads = 1
log_every = 2

[task]
name = "colocalisation"
digit = 7
n = 16
encoder = "{encoder_run.as_posix()}"
""")
    assert cli(["train", str(toml), "--out", str(tmp_path / "run"), "--set", "task.clutter=true"]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["config"]["task"]["digit"] == 7 and result["config"]["task"]["clutter"] is True
    assert result["config"]["optim"]["lr"] == 0.3 and result["steps"] == 4 and "test_rate" in result


def test_train_colocalisation_keeps_its_python_api(encoder_run, tmp_path):
    digits = coloc.load_encoder(encoder_run, "penultimate")
    with pytest.warns(DeprecationWarning, match="optim.lr=0.1"):
        st = coloc.train_colocalisation(
            3,
            clutter=False,
            encoder=digits,
            steps=4,
            n=8,
            overrides=["lr=0.1"],
            out_dir=tmp_path / "run",
            log=None,
            log_every=2,
        )
    assert isinstance(st, SpatialTransformer) and not st.training
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["config"]["optim"]["lr"] == 0.1 and result["config"]["task"]["features"] == "penultimate"
    with pytest.raises(ConfigError, match="task.digit"):  # resuming the finished run with other settings
        coloc.train_colocalisation(
            4,
            clutter=False,
            encoder=encoder_run,
            steps=4,
            n=8,
            overrides=["optim.lr=0.1"],
            out_dir=tmp_path / "run",
            resume=True,
            log=None,
            log_every=2,
        )


def test_a_fresh_state_builds_the_localiser_with_the_sgd_preset(tiny_case):
    cfg = resolve(tiny_case())
    task = task_of(cfg)
    train_set, _ = task.datasets(test=False)
    state = new_state(cfg, task, train_set, torch.device("cpu"))
    assert isinstance(state.optimizer, torch.optim.SGD)
    groups = state.optimizer.param_groups
    assert {g["lr"] for g in groups} == {0.3} and state.optimizer.defaults["momentum"] == 0.9  # loc_lr_mult 1
    assert sum(len(g["params"]) for g in groups) == len(list(state.model.parameters()))
    assert state.model.head.scale.tolist() == pytest.approx([0.5, 0.67])
