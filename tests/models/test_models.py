"""Contract tests for the paper-model registry: every registered model x transform x input shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchstn.errors import OptionError, ShapeError
from torchstn.models import (
    TABLE1_MODELS,
    TutorialSTN,
    build_model,
    count_parameters,
    list_models,
    model_options,
    model_spatial_dims,
    parameter_table,
    reference_budget,
    register_model,
)
from torchstn.nn import SpatialTransformer, record_theta
from torchstn.transforms import get_transform, list_transforms

SHAPES = [((1, 28, 28), 10), ((1, 42, 42), 10), ((1, 60, 60), 10), ((2, 42, 42), 19)]
TABLE1_TRANSFORMS = ("affine", "projective", "tps")
FAMILIES_2D = [t for t in list_transforms() if 2 in get_transform(t).ranks]


def _transforms(name: str) -> tuple[str | None, ...]:
    if name.startswith("ic_stn"):  # compositional: tps cannot compose (tests/nn/test_compositional.py)
        return ("affine", "projective")
    return TABLE1_TRANSFORMS if "transform" in model_options(name) else (None,)


# The MNIST-shaped contract: SVHN/CUB models (registered when their modules are imported) have their own tests.
# Volume models (the 3D experiment) have theirs in test_appendix_models.py.
MNIST_MODELS = [n for n in list_models() if not n.startswith(("svhn_", "cub_")) and model_spatial_dims(n) == 2]
CASES = [(name, t, shape, nc) for name in MNIST_MODELS for t in _transforms(name) for shape, nc in SHAPES]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _heads(model: torch.nn.Module) -> list[torch.nn.Linear]:
    if isinstance(model, TutorialSTN):
        return [model.fc_loc[2]]
    return [st.head.linear for st in model.transformers]


def _loss_backward(model: torch.nn.Module, x: torch.Tensor, num_classes: int) -> None:
    model.zero_grad(set_to_none=True)
    y = torch.arange(x.shape[0]) % num_classes
    F.cross_entropy(model(x), y).backward()


def _missing_grads(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]


@pytest.mark.parametrize(
    "name,transform,in_shape,num_classes", CASES, ids=[f"{n}-{t}-{'x'.join(map(str, s))}-{c}" for n, t, s, c in CASES]
)
def test_contract(name, transform, in_shape, num_classes):
    torch.manual_seed(0)
    model = build_model(name, in_shape=in_shape, num_classes=num_classes, transform=transform)
    x = torch.rand(4, *in_shape)

    # forward: logits (B, num_classes)
    logits = model(x)
    assert logits.shape == (4, num_classes) and torch.isfinite(logits).all()

    # every spatial transformer is the identity at init
    if isinstance(model, TutorialSTN):
        torch.testing.assert_close(model.stn(x), x, atol=1e-5, rtol=0)
    for st in model.transformers:
        torch.testing.assert_close(st(x), x, atol=1e-5, rtol=0)
    expected_sts = 2 if name.endswith("_2x") else (1 if transform is not None else 0)
    assert len(model.transformers) == expected_sts

    # backward at init: the heads get a gradient; the localisation nets below them get none (zero head weights)
    _loss_backward(model, x, num_classes)
    heads = _heads(model)
    for head in heads:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    if not heads:
        assert _missing_grads(model) == []
    # once the head weights move off zero, every parameter gets a gradient
    with torch.no_grad():
        for head in heads:
            head.weight.normal_(0.0, 1e-3)
    _loss_backward(model, x, num_classes)
    assert _missing_grads(model) == []


@pytest.mark.parametrize("name", ["st_fcn", "st_cnn"])
@pytest.mark.parametrize("transform", FAMILIES_2D)
def test_every_2d_family(name, transform):
    model = build_model(name, in_shape=(1, 28, 28), transform=transform)
    x = torch.rand(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    assert model.transformers[0].family.name == transform
    torch.testing.assert_close(model.transformers[0](x), x, atol=1e-5, rtol=0)


ST_POOL_MODELS = [n for n in MNIST_MODELS if "st_pool" in model_options(n) and "transform" in model_options(n)]


@pytest.mark.parametrize("name", ST_POOL_MODELS)
@pytest.mark.parametrize("in_shape,num_classes", SHAPES)
def test_st_pool_samples_full_size_then_pools(name, in_shape, num_classes):
    model = build_model(name, in_shape=in_shape, num_classes=num_classes, transform="affine", st_pool=True)
    x = torch.rand(2, *in_shape)
    assert model(x).shape == (2, num_classes)
    v = model.st(x)
    n_st = len(model.transformers)
    assert v.shape == (2, in_shape[0] * n_st, *in_shape[1:])  # full-size sampling
    torch.testing.assert_close(model.pool(v), F.avg_pool2d(x.repeat(1, n_st, 1, 1), 2), atol=1e-5, rtol=0)
    assert model.arch["st_pool"] is True


def test_st_pool_is_ignored_without_transformer():
    a = build_model("cnn", in_shape=(1, 42, 42), st_pool=True)
    b = build_model("cnn", in_shape=(1, 42, 42))
    assert count_parameters(a) == count_parameters(b) and isinstance(a.pool, torch.nn.Identity)


@pytest.mark.parametrize("st_pool", [False, True])
@pytest.mark.parametrize("in_shape,num_classes", SHAPES)
def test_parameter_counts_matched(in_shape, num_classes, st_pool):
    rows = parameter_table(in_shape, num_classes, st_pool=st_pool)
    assert [(n, t) for n, t, _ in rows] == list(TABLE1_MODELS)
    counts = [c for _, _, c in rows]
    budget = reference_budget(in_shape, num_classes)
    assert max(counts) / min(counts) < 1.10, rows  # all 8 within 10% of each other
    assert all(abs(c - budget) / budget < 0.05 for c in counts), (budget, rows)


def test_counts_match_built_models_and_fixed_widths():
    model = build_model("fcn", in_shape=(1, 28, 28), hidden=(256, 200))
    assert count_parameters(model) == 784 * 256 + 256 + 256 * 200 + 200 + 200 * 10 + 10
    assert model.arch["hidden"] == (256, 200) and model.arch["budget"] is None
    cnn = build_model("cnn", in_shape=(1, 28, 28))
    assert cnn.arch["channels"] == (64, 64)
    assert count_parameters(cnn) == (81 * 64 + 64) + (49 * 64 * 64 + 64) + (64 * 7 * 7 * 10 + 10)
    small = build_model("st_cnn", in_shape=(1, 28, 28), budget=50_000)
    assert abs(count_parameters(small) - 50_000) / 50_000 < 0.05


def test_paper_localisation_nets():
    st = build_model("st_fcn", in_shape=(1, 28, 28)).transformers[0]
    widths = [m.out_features for m in st.localisation if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 32, 32] and st.head.linear.in_features == 32
    st = build_model("st_cnn", in_shape=(1, 42, 42), transform="tps").transformers[0]
    convs = [m for m in st.localisation if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5))] * 2
    assert isinstance(st.localisation[0], torch.nn.MaxPool2d) and st.head.linear.in_features == 20
    assert st.family.num_params == 32  # 16 control points


def test_st_options_pass_through_and_record_theta():
    model = build_model(
        "st_cnn",
        in_shape=(1, 28, 28),
        transform="tps",
        st_options={"grid_size": 3, "bound": 0.5, "padding_mode": "border"},
    )
    st = model.transformers[0]
    assert st.family.grid_size == 3 and st.head.bound == 0.5 and st.padding_mode == "border"
    assert build_model("st_fcn_2x", in_shape=(1, 28, 28), bound=0.25).transformers[1].head.bound == 0.25
    two = build_model("st_fcn_2x", in_shape=(2, 42, 42), num_classes=19, transform="attention")
    with record_theta(two) as thetas:
        two(torch.rand(3, 2, 42, 42))
    assert len(thetas) == 2 and all(v[0].shape == (3, 3) for v in thetas.values())
    assert all(isinstance(m, SpatialTransformer) for m in two.transformers)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_model("st_cnnn", in_shape=(1, 28, 28)), "Did you mean 'st_cnn'"),
        (lambda: build_model("fcn", in_shape=(1, 28, 28), hiden=(10, 10)), "Did you mean 'hidden'"),
        (lambda: build_model("st_cnn", in_shape=(1, 28, 28), transform="afine"), "Did you mean 'affine'"),
        (
            lambda: build_model("st_cnn", in_shape=(1, 28, 28), st_options={"padding": "zeros"}),
            "Did you mean 'padding_mode'",
        ),
        (
            lambda: build_model("st_cnn", in_shape=(1, 28, 28), transform="tps", st_options={"grid_sise": 3}),
            "Did you mean 'grid_size'",
        ),
        (lambda: build_model("st_cnn", in_shape=(1, 28, 28), st_options={"out_size": 14}), "out_size"),
        (lambda: build_model("fcn", in_shape=(1, 28, 28), transform="affine"), "no spatial transformer"),
        (lambda: build_model("st_fcn", in_shape=(1, 28, 28), transform="affine3d"), "2D"),
        (lambda: build_model("tutorial_stn", in_shape=(1, 28, 28), st_pool=True), "st_pool"),
        (lambda: build_model("tutorial_stn", in_shape=(1, 28, 28), budget=10), "takes no options"),
        (lambda: build_model("fcn", in_shape=(1, 28, 28), hidden=(10, 10), budget=10), "not both"),
        (lambda: build_model("st_fcn", in_shape=(1, 28, 28), bound=0.5, st_options={"bound": 0.5}), "not both"),
        (lambda: build_model("fcn", in_shape=(1, 28, 28), bound=0.5), "unknown keyword 'bound'"),
        (lambda: build_model("cnn", in_shape=(1, 28, 28), channels=(10,)), "two positive ints"),
        (lambda: build_model("cnn", in_shape=(1, 28, 28), budget=-5), "budget"),
        (lambda: build_model("cnn", in_shape=(1, 28, 28), num_classes=0), "num_classes"),
        (lambda: build_model("cnn", in_shape=(1, 28, 28), in_shape_=(1, 2, 2)), "Did you mean"),
        (lambda: model_options("fnc"), "Did you mean 'fcn'"),
        (lambda: model_spatial_dims("st3d_cn"), "Did you mean 'st3d_cnn'"),
        (lambda: register_model("cnn")(lambda in_shape, num_classes: None), "'cnn' is already registered"),
        (lambda: register_model("new_model", spatial_dims=4), "spatial_dims must be 2 or 3"),
    ],
)
def test_bad_options_raise(call, match):
    with pytest.raises(OptionError, match=match):
        call()
    assert "new_model" not in list_models()


@pytest.mark.parametrize(
    "name,in_shape",
    [("cnn", (28, 28)), ("fcn", (1, 0, 28)), ("cnn", (1, 3, 3)), ("st_cnn", (1, 8, 8)), ("tutorial_stn", (1, 10, 10))],
)
def test_bad_shapes_raise(name, in_shape):
    with pytest.raises(ShapeError):
        build_model(name, in_shape=in_shape)


def _shapes_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """4 classes of 8x8 shapes (filled square, hollow square, plus, X) at random places on a 28x28 canvas."""
    pats = torch.zeros(4, 8, 8)
    pats[0] = 1.0
    pats[1, [0, -1], :] = 1.0
    pats[1, :, [0, -1]] = 1.0
    pats[2, 3:5, :] = 1.0
    pats[2, :, 3:5] = 1.0
    idx = torch.arange(8)
    pats[3, idx, idx] = 1.0
    pats[3, idx, 7 - idx] = 1.0
    y = torch.randint(0, 4, (n,), generator=g)
    offsets = torch.randint(0, 28 - 8 + 1, (n, 2), generator=g)
    x = torch.zeros(n, 1, 28, 28)
    for i, (r, c) in enumerate(offsets.tolist()):
        x[i, 0, r : r + 8, c : c + 8] = pats[y[i]]
    return x, y


def test_st_cnn_learns_translated_shapes():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model("st_cnn", in_shape=(1, 28, 28), transform="affine", channels=(16, 16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        x, y = _shapes_batch(32, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first / 10, (first, last)
    assert model.transformers[0].head.linear.weight.abs().sum() > 0  # the localisation net trained too
