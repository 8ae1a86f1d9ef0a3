"""Tests for the co-localisation experiment (torchstn.experiments.colocalisation, paper Appendix A.2)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from torchstn.data.datasets import CoLocalisation
from torchstn.data.synthetic import synthetic_digits
from torchstn.errors import ConfigError, OptionError, ShapeError
from torchstn.experiments import colocalisation as coloc
from torchstn.models.mnist import cnn, st_cnn


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(200, seed=0)  # 20 of each class


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.manual_seed(0)
    return coloc.Encoder(cnn((1, 28, 28), channels=(4, 4)))  # untrained but fixed


# ------------------------------------------------------------------------------------------------------------ loss
def test_triplet_loss_by_hand():
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 3.0], [0.0, 0.5]])
    negative = torch.tensor([[0.0, 3.0], [2.0, 1.0], [0.0, 0.5]])
    # |a-p|^2 - |a-n|^2 + 1: 1 - 9 + 1 = -7 -> 0 (the hinge); 4 - 1 + 1 = 4; 0.25 - 0.25 + 1 = 1
    assert coloc.triplet_loss(anchor, positive, negative, reduction="none").tolist() == [0.0, 4.0, 1.0]
    assert coloc.triplet_loss(anchor, positive, negative).item() == 5.0
    # alpha = 0.5: 0, 3.5, 0.5
    assert coloc.triplet_loss(anchor, positive, negative, alpha=0.5, reduction="mean").item() == pytest.approx(4 / 3)
    with pytest.raises(OptionError, match="reduction"):
        coloc.triplet_loss(anchor, positive, negative, reduction="max")


def test_colocalisation_loss_is_the_sum_over_ordered_pairs():
    g = torch.Generator().manual_seed(0)
    f, r = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    # sum_n sum_{m != n} max(0, |f_n - f_m|^2 - |f_n - r_n|^2 + alpha), written out
    direct = sum(max(0.0, float((f[i] - f[j]).pow(2).sum() - (f[i] - r[i]).pow(2).sum() + 1.0))
                 for i in range(5) for j in range(5) if i != j)  # fmt: skip
    assert coloc.colocalisation_loss(f, r, reduction="sum").item() == pytest.approx(direct, rel=1e-12)
    assert coloc.colocalisation_loss(f, r).item() == pytest.approx(direct / 20, rel=1e-12)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    n, m = torch.tensor(pairs).T
    assert coloc.triplet_loss(f[n], f[m], r[n]).item() == pytest.approx(direct, rel=1e-12)
    # identical crops far from their negatives: every hinge at zero
    assert coloc.colocalisation_loss(torch.zeros(4, 2), torch.full((4, 2), 2.0)).item() == 0.0
    with pytest.raises(ShapeError):
        coloc.colocalisation_loss(torch.zeros(1, 2), torch.zeros(1, 2))


# ------------------------------------------------------------------------------------------------------------ boxes
def test_box_iou_known_boxes():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert coloc.box_iou(a, a).item() == 1.0
    assert coloc.box_iou(a, torch.tensor([5.0, 5.0, 6.0, 6.0])).item() == 0.0  # disjoint
    assert coloc.box_iou(a, torch.tensor([2.0, 0.0, 4.0, 2.0])).item() == 0.0  # touching at an edge
    assert coloc.box_iou(a, torch.tensor([2.0, 2.0, 3.0, 3.0])).item() == 0.0  # touching at a corner
    assert coloc.box_iou(a, torch.tensor([0.0, 0.0, 2.0, 1.0])).item() == 0.5  # half of a, inside it
    assert coloc.box_iou(a, torch.tensor([1.0, 0.0, 3.0, 2.0])).item() == pytest.approx(1 / 3)  # shifted by half
    assert coloc.box_iou(a, torch.tensor([1.0, 1.0, 1.0, 1.0])).item() == 0.0  # empty box, no NaN
    # broadcasting: pairwise (N, M) like torchvision's box_iou
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0]])
    assert coloc.box_iou(boxes[:, None], boxes[None]).shape == (2, 2)


def test_attention_boxes_known_theta_and_dataset_round_trip(digits):
    theta = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 0.0, 0.0], [1 / 3, 2 / 3, -2 / 3], [0.5, 0.25, 0.0]])
    expected = torch.tensor([[0.0, 0.0, 84.0, 84.0], [28.0, 28.0, 56.0, 56.0], [56.0, 0.0, 84.0, 28.0],
                             [31.5, 21.0, 73.5, 63.0]])  # fmt: skip
    assert torch.allclose(coloc.attention_boxes(theta, (84, 84)), expected, atol=1e-5)
    # a non-square input: x follows the width, y the height
    assert torch.allclose(coloc.attention_boxes(torch.tensor([[0.5, 0.0, 0.0]]), (40, 80)),
                          torch.tensor([[20.0, 10.0, 60.0, 30.0]]))  # fmt: skip
    ds = CoLocalisation(5, n=6, clutter=True, source=digits)
    bn = ds.boxes_normalised.double()
    theta = torch.stack(((bn[:, 2] - bn[:, 0]) / 2, (bn[:, 0] + bn[:, 2]) / 2, (bn[:, 1] + bn[:, 3]) / 2), dim=1)
    assert torch.allclose(coloc.attention_boxes(theta, (84, 84)), ds.boxes.double(), atol=1e-9)
    assert torch.allclose(coloc.box_iou(coloc.attention_boxes(theta, (84, 84)), ds.boxes.double()),
                          torch.ones(6, dtype=torch.float64))  # fmt: skip


# ------------------------------------------------------------------------------------------------------------ parts
def test_encoder_features_and_refusals():
    torch.manual_seed(0)
    model = cnn((1, 28, 28), channels=(4, 6))
    x = torch.rand(3, 1, 28, 28)
    sizes = {f: coloc.Encoder(model, f, normalise=False)(x).shape[1] for f in coloc.FEATURES}
    assert sizes == {"concat": 4 * 14 * 14 + 6 * 7 * 7 + 10, "penultimate": 6 * 7 * 7, "logits": 10, "probs": 10}
    assert torch.allclose(coloc.Encoder(model, "logits", normalise=False)(x), model(x))
    e = coloc.Encoder(model)
    e.train()
    assert not e.training and not any(p.requires_grad for p in e.parameters())
    with pytest.raises(OptionError, match="spatial transformer"):
        coloc.Encoder(st_cnn((1, 28, 28)))
    with pytest.raises(OptionError, match="features"):
        coloc.Encoder(model, "penultimat")


def test_window_head_starts_central_and_stays_in_bounds():
    head = coloc.WindowHead(8, start_scale=0.6, scale=(0.3, 0.67))
    assert torch.allclose(head(torch.randn(4, 8)), torch.tensor([0.6, 0.0, 0.0]).expand(4, 3))
    with torch.no_grad():
        head.linear.weight.normal_(0.0, 100.0)
    theta = head(torch.randn(256, 8))
    s, t = theta[:, 0], theta[:, 1:]
    assert bool((s >= 0.3).all() and (s <= 0.67).all())
    assert bool((t.abs() <= (1 - s)[:, None] + 1e-6).all())  # the window stays inside the image
    head.scale.copy_(torch.tensor([0.3, 0.4]))  # what the coarse-to-fine schedule does
    assert bool((head(torch.randn(64, 8))[:, 0] <= 0.4 + 1e-6).all())
    with pytest.raises(OptionError):
        coloc.WindowHead(8, start_scale=0.2, scale=(0.3, 0.67))


def test_random_crops_are_pixel_crops():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).view(2, 3, 10, 12)
    crops = coloc.random_crops(x, torch.Generator().manual_seed(1), size=4)
    assert crops.shape == (2, 3, 4, 4)
    for i in range(2):  # each crop is a contiguous block of its own image, same place in every channel
        y0, x0 = divmod(int(crops[i, 0, 0, 0] - x[i, 0, 0, 0]), 12)
        assert torch.equal(crops[i], x[i, :, y0 : y0 + 4, x0 : x0 + 4])
    with pytest.raises(ShapeError):
        coloc.random_crops(x, torch.Generator(), size=11)


# ------------------------------------------------------------------------------------------------------------ training
def test_tiny_run_lowers_the_loss(digits, tiny_encoder, tmp_path):
    st = coloc.train_colocalisation(3, clutter=False, encoder=tiny_encoder, steps=40, n=16, source=digits,
                                    out_dir=tmp_path, log=None, log_every=10)  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]  # means over steps 1-10, ..., 31-40
    assert len(losses) == 4 and losses[-1] < 0.92 * losses[0], losses  # 0.84-0.87 over data seeds 0-3
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["step"] == 40 and 0.0 <= result["rate"] <= 1.0 and not st.training
    assert result["meta"]["digit"] == 3 and result["meta"]["features"] == "concat"
    # the final window is bounded by the zoomed scale
    boxes = coloc.predict_boxes(st, CoLocalisation(3, n=16, source=digits).batch(torch.arange(16))[0])
    assert bool(((boxes[:, 2] - boxes[:, 0]) <= 0.4 * 84 + 1e-3).all())
    # resuming the finished run with other settings is refused
    with pytest.raises(ConfigError, match="trained with"):
        coloc.train_colocalisation(4, clutter=False, encoder=tiny_encoder, steps=40, n=16, source=digits,
                                   out_dir=tmp_path, log=None, resume=True)  # fmt: skip


def test_reproduce_writes_its_table(tmp_path):
    tiny = ["optim.iterations=2", "model.channels=[4, 4]"]
    rows = coloc.reproduce_colocalisation(tmp_path, digits=[1], clutter=(False, True), steps=3, n=5,
                                          synthetic=120, say=None, encoder_overrides=tiny)  # fmt: skip
    assert [(r["digit"], r["clutter"], r["paper"]) for r in rows] == [(1, False, "100"), (1, True, "75-93")]
    assert (tmp_path / "encoder" / "result.json").is_file()
    with open(tmp_path / "colocalisation.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["digit"] for t in table] == ["1", "1"] and all(0 <= float(t["rate"]) <= 100 for t in table)
    md = (tmp_path / "colocalisation.md").read_text()
    assert "| Digit | Clutter | IoU > 0.5 (ours) | Paper |" in md and "--synthetic 120" in md and "Synthetic" in md
    pytest.importorskip("matplotlib")
    assert (tmp_path / "colocalisation_plain.png").stat().st_size > 0
    assert (tmp_path / "colocalisation_cluttered.png").stat().st_size > 0


def test_command_line_arguments():
    parser = coloc.get_args_parser()
    args = parser.parse_args(["--digits", "1,7", "--clutter", "plain", "--steps", "50"])
    assert (args.digits, args.clutter, args.steps, args.encoder, args.features) == ("1,7", "plain", 50, None, "concat")
    with pytest.raises(OptionError, match="digits"):
        coloc.main(parser.parse_args(["--digits", "one"]))


def test_reproduce_command_runs_it(tmp_path):
    from torchstn.experiments.cli import main as cli

    argv = ["reproduce", "colocalisation", "--out", str(tmp_path), "--digits", "2", "--clutter", "plain",
            "--steps", "2", "--n", "4", "--synthetic", "120", "--threads", "1",
            "--encoder-set", "optim.iterations=2", "--encoder-set", "model.channels=[4, 4]"]  # fmt: skip
    assert cli(argv) == 0
    assert "| 2 | no |" in (tmp_path / "colocalisation.md").read_text()
    assert cli(["reproduce", "colocalisation", "--digits", "x"]) == 2
