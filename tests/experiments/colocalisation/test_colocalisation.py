"""Tests of the co-localisation parts (torchstn.experiments.colocalisation, paper Appendix A.2): the loss, boxes and
IoU, the window and its head, the encoder, random crops. Training on the engine: test_task.py, test_distributed.py;
the command: test_reproduce.py."""

from __future__ import annotations

import pytest
import torch

from torchstn.data import CoLocalisation, synthetic_digits
from torchstn.errors import OptionError, ShapeError
from torchstn.experiments import colocalisation as coloc
from torchstn.models.mnist import cnn, st_cnn

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(200, seed=0)  # 20 of each class


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
    direct = sum(
        max(0.0, float((f[i] - f[j]).pow(2).sum() - (f[i] - r[i]).pow(2).sum() + 1.0))
        for i in range(5)
        for j in range(5)
        if i != j
    )
    assert coloc.colocalisation_loss(f, r, reduction="sum").item() == pytest.approx(direct, rel=1e-12)
    assert coloc.colocalisation_loss(f, r).item() == pytest.approx(direct / 20, rel=1e-12)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    n, m = torch.tensor(pairs).T
    assert coloc.triplet_loss(f[n], f[m], r[n]).item() == pytest.approx(direct, rel=1e-12)
    # identical crops far from their negatives: every hinge at zero
    assert coloc.colocalisation_loss(torch.zeros(4, 2), torch.full((4, 2), 2.0)).item() == 0.0
    with pytest.raises(ShapeError):
        coloc.colocalisation_loss(torch.zeros(1, 2), torch.zeros(1, 2))
    # reduction "none": the (N, N) terms, anchor n in row n, positive m in column m, zero on the diagonal
    terms = coloc.colocalisation_loss(f, r, reduction="none")
    assert terms.shape == (5, 5) and bool((terms.diagonal() == 0).all())
    for i, j in pairs:
        hinge = float((f[i] - f[j]).pow(2).sum() - (f[i] - r[i]).pow(2).sum() + 1.0)
        assert terms[i, j].item() == pytest.approx(max(0.0, hinge), rel=1e-12)
    # misordered: the positive farther from the anchor than its negative, |f_n - f_m|^2 > |f_n - r_n|^2
    d = lambda a, b: float((a - b).pow(2).sum())  # noqa: E731
    misordered = [sum(d(f[i], f[j]) > d(f[i], r[i]) for j in range(5) if j != i) / 4 for i in range(5)]
    assert coloc.misordered_triplets(f, r).tolist() == pytest.approx(misordered)
    assert 0 < sum(misordered) < 5  # the check sees both cases
    with pytest.raises(OptionError, match="reduction"):
        coloc.colocalisation_loss(f, r, reduction="max")


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
    expected = torch.tensor(
        [[0.0, 0.0, 84.0, 84.0], [28.0, 28.0, 56.0, 56.0], [56.0, 0.0, 84.0, 28.0], [31.5, 21.0, 73.5, 63.0]]
    )
    assert torch.allclose(coloc.attention_boxes(theta, (84, 84)), expected, atol=1e-5)
    # a non-square input: x follows the width, y the height
    assert torch.allclose(
        coloc.attention_boxes(torch.tensor([[0.5, 0.0, 0.0]]), (40, 80)), torch.tensor([[20.0, 10.0, 60.0, 30.0]])
    )
    ds = CoLocalisation(5, n=6, clutter=True, source=digits)
    bn = ds.boxes_normalised.double()
    theta = torch.stack(((bn[:, 2] - bn[:, 0]) / 2, (bn[:, 0] + bn[:, 2]) / 2, (bn[:, 1] + bn[:, 3]) / 2), dim=1)
    assert torch.allclose(coloc.attention_boxes(theta, (84, 84)), ds.boxes.double(), atol=1e-9)
    assert torch.allclose(
        coloc.box_iou(coloc.attention_boxes(theta, (84, 84)), ds.boxes.double()), torch.ones(6, dtype=torch.float64)
    )


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
    assert head.identity.tolist() == pytest.approx([0.6, 0.0, 0.0]) and "identity" not in head.state_dict()


def test_window_schedule_and_refusals():
    w = coloc.Window()
    assert w.scale_at(0, 200) == w.scale_at(100, 200) == (0.5, 0.67)  # coarse until half-way
    assert w.scale_at(160, 200) == w.scale_at(10_000, 200) == (0.3, 0.4)  # fine from 80% on
    lo, hi = w.scale_at(130, 200)  # half-way through the zoom
    assert (lo, hi) == pytest.approx((0.4, 0.535))
    for bad in (
        {"coarse": (0.7, 0.5)},
        {"fine": (0.0, 0.4)},
        {"start_scale": 0.7},
        {"zoom": (0.8, 0.5)},
        {"fine": (0.3, 1.2)},
    ):
        with pytest.raises(OptionError):
            coloc.Window(**bad)


def test_random_crops_are_pixel_crops():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).view(2, 3, 10, 12)
    crops = coloc.random_crops(x, torch.Generator().manual_seed(1), size=4)
    assert crops.shape == (2, 3, 4, 4)
    for i in range(2):  # each crop is a contiguous block of its own image, same place in every channel
        y0, x0 = divmod(int(crops[i, 0, 0, 0] - x[i, 0, 0, 0]), 12)
        assert torch.equal(crops[i], x[i, :, y0 : y0 + 4, x0 : x0 + 4])
    with pytest.raises(ShapeError):
        coloc.random_crops(x, torch.Generator(), size=11)
