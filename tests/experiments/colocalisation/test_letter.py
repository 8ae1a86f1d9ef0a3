"""The paper's letter as options of the co-localisation task (issue 18): random pairs per step (``task.pairs``), a
window-sized ``I^rand`` (``task.rand_size``), the stride-1 localiser (``task.loc_stride``) and an encoder trained on
a distorted set at its own input size (``task.encoder_fit``). Each test fails if its option does nothing."""

import pytest
import torch

from torchstn.errors import ConfigError, OptionError, ShapeError
from torchstn.experiments import colocalisation as coloc
from torchstn.experiments.engine import checkpoint as ckpt
from torchstn.experiments.engine.config_io import apply_overrides, load_config
from torchstn.experiments.engine.runs import load_run
from torchstn.experiments.engine.trainer import fit, task_of

from .conftest import SYNTHETIC
from .test_task import _assert_same_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(run):
    return ckpt.load_checkpoint(run / "last.pt")["model"]


def _differ(a, b):
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def rts_encoder(tmp_path_factory):
    """A tiny CNN trained by ``table1:RTS/cnn`` on synthetic digits: it reads 42x42 images."""
    out = tmp_path_factory.mktemp("rts") / "cnn"
    overrides = [f"data.synthetic={SYNTHETIC}", "model.channels=[4, 4]", "optim.iterations=5", "run.threads=1"]
    fit(load_config("table1:RTS/cnn", overrides), out, progress=False)
    return out


# ------------------------------------------------------------------------------------------------ the draws
def test_random_pairs_are_uniform_over_ordered_pairs_of_distinct_items():
    anchor, positive = coloc.random_pairs(4, 12000, torch.Generator().manual_seed(0))
    assert bool((anchor != positive).all())
    counts = torch.zeros(4, 4)
    counts.index_put_((anchor, positive), torch.ones(12000), accumulate=True)
    off = counts[~torch.eye(4, dtype=torch.bool)]
    assert off.min() > 850 and off.max() < 1150  # 1000 expected for each of the 12 ordered pairs
    with pytest.raises(ShapeError):
        coloc.random_pairs(1, 3, torch.Generator())


def test_random_windows_keep_the_scale_and_stay_inside():
    theta = torch.tensor([[0.3, 0.5, -0.2], [0.5, 0.0, 0.0]])
    corners = coloc.random_windows(theta, torch.tensor([[1.0, 1.0], [-1.0, 1.0]]))
    assert torch.allclose(corners, torch.tensor([[0.3, 0.7, 0.7], [0.5, -0.5, 0.5]]))  # touching the edges
    boxes = coloc.attention_boxes(corners, (84, 84))
    assert float(boxes.min()) >= -1e-4 and float(boxes.max()) <= 84 + 1e-4
    with pytest.raises(ShapeError):
        coloc.random_windows(theta, torch.zeros(3, 2))


# ------------------------------------------------------------------------------------------------ task.pairs
def test_random_pairs_per_step_from_the_engine_generator(tiny_case):
    task = task_of(tiny_case(sets=["task.pairs=5"]))
    train_set, _ = task.datasets(test=False)
    model = task.build_model(tuple(train_set.image_shape), 10)
    indices = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    (images, owners, rand), (anchors, positives, guide) = task.batch(
        train_set, indices, torch.Generator().manual_seed(5)
    )
    # replayed: the pairs, then one 28x28 crop of each pair's anchor image, all from the given generator
    g = torch.Generator().manual_seed(5)
    a, p = coloc.random_pairs(16, 5, g)
    used = torch.unique(torch.cat((a, p)))
    assert torch.equal(images, train_set.batch(indices[used])[0])  # only the images the pairs need
    assert torch.equal(used[anchors], a) and torch.equal(used[positives], p) and torch.equal(owners, anchors)
    assert torch.equal(rand, coloc.random_crops(images[anchors], g))
    outputs = task.forward(model, (images, owners, rand))
    loss = task.loss(outputs, (anchors, positives, guide))
    e = task.encoder()
    with torch.no_grad():
        f = e(outputs[0])
        expected = coloc.triplet_loss(f[anchors], f[positives], e(rand), reduction="mean")
        every_pair = coloc.colocalisation_loss(f, e(coloc.random_crops(images, torch.Generator().manual_seed(5))))
    assert loss.item() == pytest.approx(expected.item()) and loss.item() != pytest.approx(every_pair.item())
    wrong, items = task.mistakes(outputs, (anchors, positives, guide))  # the sampled triplets misordered
    beyond = coloc.triplet_loss(f[anchors], f[positives], e(rand), alpha=0.0, reduction="none")
    assert items == 5 and wrong == int((beyond > 0).sum())
    fresh = (outputs[0].detach().clone(), outputs[1], outputs[2])  # without the loss's features: encoded again
    assert task.mistakes(fresh, (anchors, positives, guide)) == (wrong, items)


def test_random_pairs_train_another_run_and_resume_exactly(tiny_case, tmp_path):
    fit(tiny_case(steps=8), tmp_path / "every", progress=False)
    cfg = tiny_case(steps=8, sets=["task.pairs=6"])
    fit(cfg, tmp_path / "full", progress=False)
    assert _differ(_weights(tmp_path / "every"), _weights(tmp_path / "full"))
    assert fit(cfg, tmp_path / "part", progress=False, stop_after=5)["step"] == 5
    fit(cfg, tmp_path / "part", resume=True, progress=False)
    _assert_same_run(tmp_path / "full", tmp_path / "part")


# -------------------------------------------------------------------------------------------- task.rand_size
def test_window_sized_patches_are_read_like_the_windows(tiny_case):
    task = task_of(tiny_case(sets=["task.rand_size=window"]))
    train_set, _ = task.datasets(test=False)
    model = task.build_model(tuple(train_set.image_shape), 10)
    task.on_step(model, 11)  # late in the zoom: windows of about 0.3-0.4 of the half-canvas
    (images, owners, places), pairs = task.batch(train_set, torch.arange(16), torch.Generator().manual_seed(3))
    assert pairs[0].numel() == 0 and torch.equal(owners, torch.arange(16))  # every pair, a patch per image
    assert places.shape == (16, 2) and float(places.abs().max()) <= 1.0
    crops, theta, patches = task.forward(model, (images, owners, places))
    with torch.no_grad():
        assert torch.equal(patches, model.warp(images, coloc.random_windows(theta, places)))
        # a patch covers its window's area of the image, not a 28x28 one: its box has the window's side
        side = coloc.attention_boxes(coloc.random_windows(theta, places), (84, 84))
        assert (side[:, 2] - side[:, 0]).tolist() == pytest.approx((theta[:, 0] * 84).tolist(), abs=1e-3)
        assert float(theta[:, 0].min()) < 0.33 or float(theta[:, 0].max()) > 0.34  # not the 28 px crop
    loss = task.loss((crops, theta, patches), pairs)
    e = task.encoder()
    with torch.no_grad():
        assert loss.item() == pytest.approx(coloc.colocalisation_loss(e(crops), e(patches)).item())


def test_window_sized_patches_change_the_run_and_resume_exactly(tiny_case, tmp_path):
    base = fit(tiny_case(steps=8), tmp_path / "crop", progress=False)
    cfg = tiny_case(steps=8, sets=["task.rand_size=window", "task.pairs=7"])
    full = fit(cfg, tmp_path / "full", progress=False)
    assert _differ(_weights(tmp_path / "crop"), _weights(tmp_path / "full"))
    assert full["test_loss"] != pytest.approx(base["test_loss"])
    fit(cfg, tmp_path / "part", progress=False, stop_after=3)
    fit(cfg, tmp_path / "part", resume=True, progress=False)
    _assert_same_run(tmp_path / "full", tmp_path / "part")


# ------------------------------------------------------------------------------------------- task.loc_stride
def test_the_two_readings_of_the_localiser(tiny_case, tmp_path):
    def params(st):
        return sum(p.numel() for p in st.parameters())

    assert [params(coloc.localiser(stride=s)) for s in (4, 1)] == [5947, 93179]  # "4 pixel stride" / "100k"
    cfg = tiny_case(steps=2, sets=["task.loc_stride=1"])
    fit(cfg, tmp_path, progress=False)
    _, st, _ = load_run(tmp_path)  # the saved run rebuilds the stride-1 net
    assert params(st) == 93179 and st.localisation[0].stride == (1, 1)
    with pytest.raises(OptionError, match="stride"):
        coloc.localiser(stride=0)


# ------------------------------------------------------------------------------------------------- encoders
def test_an_rts_cnn_reads_the_crops_padded_or_resized(rts_encoder, tiny_case, tmp_path):
    pad, resize = coloc.load_encoder(rts_encoder), coloc.load_encoder(rts_encoder, fit="resize")
    assert pad.in_size == (42, 42) and resize.fit == "resize"
    x = torch.rand(3, 1, 28, 28)
    padded = pad.fitted(x)
    assert padded.shape == (3, 1, 42, 42) and torch.equal(padded[..., 7:35, 7:35], x)
    assert float(padded.sum()) == pytest.approx(float(x.sum()))  # black borders
    assert not torch.allclose(pad(x), resize(x))
    with pytest.raises(OptionError, match="pad"):
        pad.fitted(torch.rand(1, 1, 50, 50))
    results = {}
    for fit_ in ("pad", "resize"):
        cfg = tiny_case(steps=4, sets=[f"task.encoder={rts_encoder.as_posix()}", f"task.encoder_fit={fit_}"])
        results[fit_] = fit(cfg, tmp_path / fit_, progress=False)
    assert task_of(cfg).encoder().in_size == (42, 42)
    assert results["pad"]["test_loss"] != pytest.approx(results["resize"]["test_loss"])
    coloc.train_colocalisation(3, clutter=True, encoder=resize, steps=2, n=8, out_dir=tmp_path / "api", log=None)
    assert load_run(tmp_path / "api")[0].task.options.encoder_fit == "resize"  # a loaded Encoder keeps its fit


def test_the_letter_options_are_checked(tiny_case):
    cfg = tiny_case()
    for bad, match in [
        ("task.pairs=-1", "task.pairs"),
        ("task.rand_size=windw", "Did you mean 'window'"),
        ("task.loc_stride=0", "task.loc_stride"),
        ("task.encoder_fit=crop", "task.encoder_fit"),
    ]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(cfg, [bad])
    assert "5 random pairs" in task_of(apply_overrides(cfg, ["task.pairs=5"])).describe((1, 84, 84))
