"""The IC-STN experiment: the packed inputs, the dataset over the ICSTN variant, the model wrapper's two routes,
every cell training a few steps by name, and ``torchstn reproduce icstn``."""

from __future__ import annotations

import json

import pytest
import torch

from torchstn.data import DistortedMNIST
from torchstn.data.synthetic import synthetic_digits
from torchstn.errors import ConfigError, OptionError, ShapeError
from torchstn.experiments.cli import main
from torchstn.experiments.engine.config import resolve
from torchstn.experiments.engine.config_io import load_config
from torchstn.experiments.icstn import ICSTN, ICSTNTask, PerturbedDigits, PerturbedInput, pack, unpack
from torchstn.models import build_model

TINY = [
    "--set",
    "optim.iterations=2",
    "--set",
    "data.synthetic=60",
    "--set",
    "optim.batch_size=8",
    "--set",
    "model.channels=[4, 4]",
    "--set",
    "run.eval_every=0",
    "--threads",
    "1",
    "--quiet",
]


def _sets(n=24):
    source = synthetic_digits(n, seed=0)
    return DistortedMNIST("ICSTN", source=source), DistortedMNIST("ICSTN", split="test", source=source)


def test_pack_round_trip_and_errors():
    x, theta = torch.rand(3, 1, 28, 28), torch.randn(3, 8)
    got_x, got_theta = unpack(pack(x, theta))
    assert torch.equal(got_x, x) and torch.allclose(got_theta, theta)
    zero_x, ident = unpack(torch.zeros(1, 2, 28, 28))
    assert torch.equal(ident[0], torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0]))  # all zeros: the identity
    with pytest.raises(ShapeError, match="pack takes"):
        pack(x, theta[:2])
    with pytest.raises(ShapeError, match=r"\(B, 2, H, W >= 8\)"):
        unpack(x)


def test_the_test_set_is_the_icstn_variants_and_the_cnn_sees_the_perturbed_digit():
    train, test = _sets()
    packed_test = PerturbedDigits(test)
    assert packed_test.image_shape == (2, 28, 28) and len(packed_test) == 24
    index = torch.arange(24)
    packed, labels = packed_test.batch(index)
    want, want_labels = test.batch(index)  # rendered by the distortion (float64, clamped)
    model = PerturbedInput(build_model("cnn", in_shape=(1, 28, 28), channels=(4, 4)))
    torch.testing.assert_close(model.perturbed(packed), want, atol=1e-5, rtol=0)
    assert torch.equal(labels, want_labels)
    assert torch.equal(packed_test.batch(index)[0], packed)  # fixed
    packed_train = PerturbedDigits(train)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(packed_train.batch(index, g)[0], packed_train.batch(index, g)[0])  # redrawn
    with pytest.raises(ConfigError, match="data.variant = 'ICSTN'"):
        PerturbedDigits(DistortedMNIST("P", source=synthetic_digits(4, seed=0)))


def test_the_compositional_route_starts_from_the_perturbation_on_the_undistorted_digit():
    _, test = _sets()
    packed, _ = PerturbedDigits(test).batch(torch.arange(6))
    model = PerturbedInput(build_model("ic_stn2", in_shape=(1, 28, 28), channels=(4, 4)))
    assert model.compositional
    digits, theta = unpack(packed)
    V, mats, views = model.model.st(digits, theta, return_steps=True)
    torch.testing.assert_close(views[:, 0], model.perturbed(packed))  # the first view is the perturbed digit
    torch.testing.assert_close(V, model.perturbed(packed), atol=1e-5, rtol=0)  # identity corrections at init
    assert model(packed).shape == (6, 10)


@pytest.mark.parametrize("cell", [c.name for c in ICSTN.cells])
def test_every_cell_trains_a_few_steps_by_name(cell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"icstn:{cell}", *TINY]) == 0
    run = tmp_path / "runs" / f"icstn_{cell.replace('/', '_')}"
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 2 and 0.0 <= result["test_error"] <= 100.0
    cfg = resolve(load_config(f"icstn:{cell}"))
    assert cfg.task.name == "icstn" and cfg.optim.loc_lr_mult == 1.0 and cfg.optim.schedule == "cpu"


def test_the_models_match_the_budget():
    task = ICSTNTask(resolve(load_config("icstn:ICSTN/ic_stn4_projective")))
    counts = {}
    for cell in ICSTN.cells:
        model = build_model(cell.model, in_shape=(1, 28, 28), transform=cell.transform)
        counts[cell.name] = sum(p.numel() for p in model.parameters())
    assert max(counts.values()) / min(counts.values()) < 1.02
    assert isinstance(task.build_model((2, 28, 28), 10), PerturbedInput)


def test_reproduce_icstn_runs_the_generic_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = [a for pair in zip(TINY[0:10:2], TINY[1:10:2]) for a in pair]
    code = main(
        ["reproduce", "icstn", "--seeds", "1", "--only", "ICSTN/ic_stn1_projective,ICSTN/cnn", *sets, "--quiet"]
    )
    assert code == 0
    table = next((tmp_path / "runs" / "icstn").glob("icstn_cpu*.md")).read_text()
    assert "ICSTN/ic_stn1_projective" in table and "ICSTN/cnn" in table


def test_the_warps_figure_of_a_trained_cell(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from torchstn.experiments.icstn import warps_figure
    from torchstn.experiments.viz import compositional_figure

    monkeypatch.chdir(tmp_path)
    assert main(["train", "icstn:ICSTN/ic_stn2_projective", *TINY]) == 0
    run = tmp_path / "runs" / "icstn_ICSTN_ic_stn2_projective"
    assert main(["eval", str(run), "--threads", "1"]) == 0  # the saved run rebuilds the task's model and test set
    png = warps_figure(run, tmp_path / "fig" / "warps.png", n=3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # `torchstn show` draws the same: the undistorted digits, started from their perturbation
    drawn = {}

    def spy(model, images, out, *, theta_init=None, title=""):
        drawn.update(model=model, images=images, theta=theta_init)
        return compositional_figure(model, images, out, theta_init=theta_init, title=title)

    monkeypatch.setattr("torchstn.experiments.viz.compositional_figure", spy)
    assert main(["show", str(run), "--out", str(tmp_path / "fig" / "show.png"), "-n", "3"]) == 0
    assert (tmp_path / "fig" / "show.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from torchstn.experiments.engine.runs import eval_dataset, load_run

    cfg, _, payload = load_run(run)
    digits, theta = unpack(eval_dataset(cfg, payload, None).batch(torch.arange(3))[0])
    assert torch.equal(drawn["images"], digits) and torch.equal(drawn["theta"], theta)
    assert not isinstance(drawn["model"], PerturbedInput)
    assert main(["train", "icstn:ICSTN/cnn", *TINY]) == 0
    with pytest.raises(ConfigError, match="not a compositional cell"):
        warps_figure(tmp_path / "runs" / "icstn_ICSTN_cnn", tmp_path / "x.png")
    with pytest.raises(OptionError, match="holds no CompositionalSpatialTransformer"):
        compositional_figure(torch.nn.Identity(), torch.rand(2, 1, 8, 8), tmp_path / "y.png")
