"""Tests for the SVHN models (torchstn.experiments.svhn.models): the paper's layers, the transformers' places, the
sequence loss and error, and that each model learns the fixture images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchstn.errors import OptionError
from torchstn.experiments.svhn.models import (
    SVHN_MODELS,
    sequence_error,
    sequence_loss,
    svhn_cnn,
    svhn_st_cnn_multi,
    svhn_st_cnn_single,
)
from torchstn.models.registry import build_model, list_models
from torchstn.nn import SpatialTransformer, param_groups

SMALL = {"channels": (4, 5, 6, 7, 8, 8, 8, 8), "fc": (16, 16)}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _perturb_heads(model: nn.Module) -> None:
    with torch.no_grad():
        for st in model.transformers:
            st.head.linear.weight.normal_(0.0, 1e-3)


def _missing_grads(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]


def test_registered_under_their_names():
    assert set(SVHN_MODELS) <= set(list_models())
    m = build_model("svhn_st_cnn_multi", in_shape=(3, 64, 64), num_classes=11, transform="affine", **SMALL)
    assert m(torch.rand(2, 3, 64, 64)).shape == (2, 5, 11)
    with pytest.raises(OptionError, match="Did you mean 'channels'"):
        build_model("svhn_cnn", in_shape=(3, 64, 64), num_classes=11, chanels=(8,) * 8)


def test_paper_cnn_layers_and_full_size_step():
    torch.manual_seed(0)
    model = svhn_cnn()
    convs = [m for m in model.convs.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 48, (5, 5)),
        (48, 64, (5, 5)),
        (64, 128, (5, 5)),
        (128, 160, (5, 5)),
        (160, 192, (5, 5)),
        (192, 192, (5, 5)),
        (192, 192, (5, 5)),
        (192, 192, (5, 5)),
    ]
    pools = [k for k, block in enumerate(model.convs) if any(isinstance(m, nn.MaxPool2d) for m in block)]
    drops = [k for k, block in enumerate(model.convs) if any(isinstance(m, nn.Dropout) for m in block)]
    assert pools == [0, 2, 4, 6] and drops == list(range(1, 8))  # no dropout on the first conv
    fcs = [m.out_features for m in model.fc if isinstance(m, nn.Linear)]
    assert fcs == [3072, 3072] and model.heads.out_features == 55 and model.transformers == []
    assert all(m.p == 0.5 for m in model.modules() if isinstance(m, nn.Dropout))
    assert len(svhn_cnn(extra_conv=True, **{**SMALL, "channels": SMALL["channels"]}).convs) == 9
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([[1, 2, 10, 10, 10], [0, 10, 10, 10, 10]])
    logits = model(x)
    assert logits.shape == (2, 5, 11)
    sequence_loss(logits, y).backward()
    assert _missing_grads(model) == []


def test_multi_has_transformers_on_feature_maps():
    model = svhn_st_cnn_multi(**SMALL)
    seen = []
    hooks = [
        st.register_forward_hook(lambda m, a, out: seen.append((tuple(a[0].shape), out)))
        for st in model.st
        if isinstance(st, SpatialTransformer)
    ]
    x = torch.rand(2, 3, 64, 64)
    model.eval()(x)
    for h in hooks:
        h.remove()
    assert [s for s, _ in seen] == [(2, 3, 64, 64), (2, 4, 32, 32), (2, 5, 32, 32), (2, 6, 16, 16)]
    assert torch.equal(seen[0][1], seen[0][1]) and torch.allclose(seen[0][1], x, atol=1e-5)  # identity at init
    for st in model.transformers:
        linears = [m for m in st.localisation if isinstance(m, nn.Linear)]
        assert [m.out_features for m in linears] == [32, 32] and st.family.name == "affine"
        assert not any(isinstance(m, nn.Dropout) for m in st.modules())
    assert all(isinstance(s, nn.Identity) for s in list(model.st)[4:])


def test_single_has_one_transformer_with_a_4_layer_cnn():
    model = svhn_st_cnn_single(**SMALL)
    (st,) = model.transformers
    assert model.st[0] is st
    kinds = [type(m).__name__ for m in st.localisation if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert kinds == ["Conv2d", "Conv2d", "Linear", "Linear"] and st.head.linear.in_features == 32
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(st(x), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", SVHN_MODELS)
def test_every_svhn_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, in_shape=(3, 64, 64), num_classes=11, dropout=0.0, **SMALL)
    x, y = torch.rand(2, 3, 64, 64), torch.randint(0, 11, (2, 5))
    sequence_loss(model(x), y).backward()
    assert all(st.head.linear.weight.grad.abs().sum() > 0 for st in model.transformers)
    model.zero_grad(set_to_none=True)
    _perturb_heads(model)
    sequence_loss(model(x), y).backward()
    assert _missing_grads(model) == []
    groups = param_groups(model, 0.01, 0.1)
    n_loc = sum(p.numel() for st in model.transformers for p in st.parameters())
    assert sum(p.numel() for g in groups if g["lr"] == pytest.approx(0.001) for p in g["params"]) == n_loc


def test_sequence_metrics_use_the_null_class():
    labels = torch.tensor([[1, 2, 10, 10, 10], [7, 10, 10, 10, 10]])
    logits = F.one_hot(labels, 11).float() * 10
    assert sequence_error(logits, labels) == 0.0
    logits[0, 2] = F.one_hot(torch.tensor(3), 11) * 10.0  # a third digit where the sequence has ended
    assert sequence_error(logits, labels) == 0.5
    assert float(sequence_loss(logits, labels)) > float(sequence_loss(F.one_hot(labels, 11).float() * 10, labels))


@pytest.mark.parametrize(
    "builder,extra", [(svhn_cnn, {}), (svhn_st_cnn_single, {"loc_channels": (8, 8)}), (svhn_st_cnn_multi, {})]
)
def test_svhn_models_overfit_fixture_images(svhn_cache, builder, extra):
    from torchstn.experiments.svhn.data import SVHNSequences, load_svhn

    x, y = SVHNSequences(load_svhn(svhn_cache, "train")).batch(torch.arange(8))
    torch.manual_seed(0)
    model = builder(channels=(8, 8, 16, 16, 16, 16, 16, 16), fc=(64, 64), dropout=0.0, **extra)
    opt = torch.optim.Adam(param_groups(model, 2e-3, 0.1))
    losses = []
    for _ in range(40):
        loss = sequence_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, losses[::8]
