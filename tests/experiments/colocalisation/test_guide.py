"""The DDT guide of the co-localisation task (issue 18, beyond the letter): Deep Descriptor Transforming maps of a set
(:mod:`torchstn.experiments.colocalisation.ddt`) and ``task.guide = "ddt"``, which pulls the windows towards the
maps' best windows while the triplet loss trains them. Each test fails if its part does nothing or the wrong thing."""

import pytest
import torch
from torch import nn

from torchstn.errors import ConfigError, OptionError, ShapeError
from torchstn.experiments import colocalisation as coloc
from torchstn.experiments.colocalisation import ddt
from torchstn.experiments.colocalisation.task import GUIDE_REACH, guide_loss
from torchstn.experiments.engine.config_io import apply_overrides
from torchstn.experiments.engine.runs import load_run
from torchstn.experiments.engine.trainer import fit, task_of
from torchstn.models.mnist import cnn

from .test_task import _assert_same_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _squares_on_noise(n=12, size=84, side=16, seed=0):
    """``n`` canvases, each with one bright ``side`` px square (the common object) at a random place and 12 small
    bright specks elsewhere (clutter that differs per image); the squares' centres in normalised coordinates."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size)
    centres = torch.zeros(n, 2)
    for i in range(n):
        x, y = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=g))
        images[i, 0, y : y + side, x : x + side] = 1.0
        centres[i] = torch.tensor([x + side / 2, y + side / 2]) / size * 2 - 1
        for _ in range(12):  # specks, not on the square
            sx, sy = (int(v) for v in torch.randint(0, size - 2, (2,), generator=g))
            if not (x - 2 <= sx < x + side and y - 2 <= sy < y + side):
                images[i, 0, sy : sy + 2, sx : sx + 2] = 1.0
    return images, centres


def _encoder():
    """An encoder whose convs respond to ink (non-negative weights, no bias): the square is where it fires."""
    net = cnn((1, 28, 28), channels=(4, 4))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
                m.bias.zero_()
    return coloc.Encoder(net)


# --------------------------------------------------------------------------------------------------- DDT maps
def test_ddt_finds_the_common_object_among_clutter():
    images, truth = _squares_on_noise()
    enc = _encoder()
    maps = ddt.ddt_maps(enc, images)
    assert maps.shape == (12, 21, 21)  # the last conv block of a 28x28 CNN on 84x84: two 2x2 pools
    centres = ddt.ddt_centres(maps, (84, 84), 16)
    assert (centres - truth).abs().max() * 42 <= 3.0  # within 3 px of every square's centre
    # the ink alone does not: the densest 16 px window is as often on specks as the maps' sign is arbitrary
    flipped = ddt.ddt_centres(-maps, (84, 84), 16)
    assert (flipped - truth).abs().max() * 42 > 10
    # batching does not change the maps; the descriptors are the encoder's last conv block, without gradient
    assert torch.allclose(ddt.ddt_maps(enc, images, batch_size=5), maps, atol=1e-5)
    assert not ddt.conv_descriptors(enc, images[:2]).requires_grad


def test_ddt_centres_and_boxes_are_in_the_windows_conventions():
    maps = torch.zeros(2, 84, 84)
    maps[0, 10:20, 50:60] = 1.0  # the best 10 px window: x 50..60, y 10..20
    maps[1, 37:47, 37:47] = 1.0  # the centre of the canvas
    centres = ddt.ddt_centres(maps, (84, 84), 10)
    assert torch.allclose(centres, torch.tensor([[55 / 42 - 1, 15 / 42 - 1], [0.0, 0.0]]), atol=1e-6)
    boxes = ddt.ddt_boxes(centres, (84, 84), 10)
    assert torch.allclose(boxes, torch.tensor([[50.0, 10, 60, 20], [37, 37, 47, 47]]), atol=1e-4)
    # the same boxes as an attention window of that size and place
    theta = torch.cat((torch.full((2, 1), 10 / 84), centres), dim=1)
    assert torch.allclose(coloc.attention_boxes(theta, (84, 84)), boxes, atol=1e-4)


def test_ddt_bad_input_is_a_clear_error():
    enc = _encoder()
    with pytest.raises(ShapeError, match="N, C, H, W"):
        ddt.ddt_maps(enc, torch.rand(84, 84))
    with pytest.raises(ShapeError, match="too small"):
        ddt.ddt_maps(enc, torch.rand(2, 1, 3, 3))
    with pytest.raises(ShapeError, match="maps must be"):
        ddt.ddt_centres(torch.rand(2, 1, 5, 5), (84, 84), 10)
    with pytest.raises(OptionError, match="box"):
        ddt.ddt_centres(torch.rand(2, 5, 5), (84, 84), 90)


# ------------------------------------------------------------------------------------------------ the guide
def test_the_guide_loss_compares_places_relative_to_the_reach():
    # a window of half-size s centred at (1 - s) * u: the fine window (scale) lands on c when u = c / (1 - scale)
    c = torch.tensor([[0.3, -0.2]])
    u = c / (1 - 0.35)
    for s in (0.6, 0.35):  # coarse and fine windows with the same relative place: both at zero
        theta = torch.cat((torch.tensor([[s]]), (1 - s) * u), dim=1)
        assert guide_loss(theta, c, 0.35).item() == pytest.approx(0.0, abs=1e-12)
    theta = torch.tensor([[0.35, 0.0, 0.0]])
    assert guide_loss(theta, c, 0.35).item() == pytest.approx(float((u**2).sum()))
    # a target beyond the fine window's reach is clipped inside it (tanh would saturate)
    far = torch.tensor([[0.9, 0.0]])
    at_limit = torch.tensor([[0.35, 0.65 * GUIDE_REACH, 0.0]])
    assert guide_loss(at_limit, far, 0.35).item() == pytest.approx(0.0, abs=1e-12)


def test_a_guided_step_adds_the_weighted_guide_to_the_triplet_loss(tiny_case):
    task = task_of(tiny_case(sets=["task.guide=ddt", "task.guide_weight=0.5", "task.guide_end=0.5"]))
    assert not task.every_pair
    train_set, _ = task.datasets(test=False)
    model = task.build_model(tuple(train_set.image_shape), 10)
    centres = task.guide_centres(train_set)
    assert centres.shape == (16, 2) and task.guide_centres(train_set) is centres  # computed once per set
    other, _ = task_of(tiny_case(digit=5, sets=["task.guide=ddt"])).datasets(test=False)
    assert not torch.equal(task.guide_centres(other), centres)  # another set gets its own centres
    assert task.guide_centres(train_set) is not centres and torch.equal(task.guide_centres(train_set), centres)
    images, _ = train_set.batch(torch.arange(16))
    box = task.guide_box((84, 84))
    assert box == round(0.35 * 84)  # the fine phase's mean window
    assert torch.equal(centres, ddt.ddt_centres(ddt.ddt_maps(task.encoder(), images), (84, 84), box))
    indices = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    task.on_step(model, 3)
    inputs, (anchors, positives, guide) = task.batch(train_set, indices, torch.Generator().manual_seed(5))
    assert anchors.numel() == 0 and torch.equal(guide, centres[indices])
    outputs = task.forward(model, inputs)
    crops, theta, rand = outputs
    loss = task.loss(outputs, (anchors, positives, guide))
    e = task.encoder()
    with torch.no_grad():
        triplets = coloc.colocalisation_loss(e(crops), e(rand))
        weight = 0.5 * (1 - 3 / 6)  # 12 steps, the weight reaches 0 at step 6
        expected = triplets + weight * guide_loss(theta, guide, 0.35)
    assert task.guide_weight(3) == pytest.approx(weight) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert task.guide_weight(0) == 0.5 and task.guide_weight(6) == 0.0 and task.guide_weight(11) == 0.0
    lasting = task_of(tiny_case(sets=["task.guide=ddt"]))  # the defaults: 12 steps, the weight would reach 0 at 24
    assert lasting.guide_weight(0) == 1.0 and lasting.guide_weight(11) == pytest.approx(1 - 11 / 24)
    task.on_step(model, 7)  # past guide_end: the triplet loss alone
    assert task.loss(outputs, (anchors, positives, guide)).item() == pytest.approx(triplets.item(), rel=1e-5)
    assert task.mistakes(outputs, (anchors, positives, guide))[1] == 16
    # without a guide the weight is 0 and the default step is the every-pair one
    assert task_of(tiny_case()).guide_weight(0) == 0.0 and task_of(tiny_case()).every_pair


def test_the_guide_moves_the_windows_to_the_ddt_windows_and_resumes_exactly(tiny_case, tmp_path):
    # Adam: the tiny synthetic case's localiser barely moves in 40 steps of the SGD schedule, guided or not
    adam = ["optim.optimizer=adam", "optim.lr=0.01"]
    cfg = tiny_case(steps=40, sets=[*adam, "task.guide=ddt", "task.guide_weight=1", "task.guide_end=1"])
    task = task_of(cfg)
    train_set, _ = task.datasets(test=False)
    images, _ = train_set.batch(torch.arange(16))
    centres = task.guide_centres(train_set)

    def distance(run):
        _, st, _ = load_run(run)
        with torch.no_grad():
            return float(guide_loss(st(images, return_theta=True)[1], centres, 0.35))

    result = fit(cfg, tmp_path / "full", progress=False)
    plain = fit(tiny_case(steps=40, sets=adam), tmp_path / "plain", progress=False)
    start = float(guide_loss(coloc.localiser()(images, return_theta=True)[1].detach(), centres, 0.35))
    assert distance(tmp_path / "full") < 0.25 * start < 0.25 * distance(tmp_path / "plain"), start
    assert 0.0 <= result["test_guide_rate"] <= 1.0 and "test_guide_rate" not in plain  # DDT alone, beside
    assert fit(cfg, tmp_path / "part", progress=False, stop_after=15)["step"] == 15
    fit(cfg, tmp_path / "part", resume=True, progress=False)
    _assert_same_run(tmp_path / "full", tmp_path / "part")


def test_the_guide_options_are_checked(tiny_case):
    cfg = tiny_case()
    for bad, match in [
        ("task.guide=dd", "Did you mean 'ddt'"),
        ("task.guide_weight=0", "task.guide_weight"),
        ("task.guide_end=0", "task.guide_end"),
        ("task.guide_end=-1", "task.guide_end"),
    ]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(cfg, [bad])
