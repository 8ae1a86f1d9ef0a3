"""FewChannelConv2d / few_channel_conv2d: gradients against torch's (float64), fp32, bf16, compile, drop-in."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import AotEagerAndRecordGraphs

from torchstn.errors import OptionError
from torchstn.nn import FewChannelConv2d, few_channel_conv2d

D = torch.float64

#: (batch, in channels, out channels, kernel, stride, padding, dilation, H, W): odd sizes, strides that leave rows
#: and columns uncovered, dilation, batches that do not divide into the chunks
SHAPES = [
    (3, 1, 5, 9, 1, 4, 1, 13, 11),
    (2, 1, 4, 3, 1, 0, 1, 7, 9),
    (5, 2, 3, 5, 2, 2, 1, 12, 9),
    (1, 3, 2, 7, 3, 1, 1, 17, 14),
    (4, 4, 6, 3, 2, 0, 2, 11, 10),
    (2, 1, 3, (3, 5), (1, 2), (1, 0), (2, 1), 10, 13),
]


def _data(b, c, o, k, dtype=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    w = torch.randn(o, c, kh, kw, generator=g, dtype=dtype)
    return w, torch.randn(o, generator=g, dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float64_gradients_match_torch_nn_grad_and_conv2d_autograd(shape):
    b, c, o, k, s, p, d, H, W = shape
    w, bias = _data(b, c, o, k)
    x = torch.randn(b, c, H, W, dtype=D, generator=torch.Generator().manual_seed(1))
    x1, w1, b1 = (t.clone().requires_grad_() for t in (x, w, bias))
    y = few_channel_conv2d(x1, w1, b1, s, p, d)
    x2, w2, b2 = (t.clone().requires_grad_() for t in (x, w, bias))
    want = F.conv2d(x2, w2, b2, s, p, d)
    torch.testing.assert_close(y, want)
    go = torch.randn_like(y)
    y.backward(go)
    want.backward(go)
    torch.testing.assert_close(x1.grad, torch.nn.grad.conv2d_input(x.shape, w, go, s, p, d))
    torch.testing.assert_close(w1.grad, torch.nn.grad.conv2d_weight(x, w.shape, go, s, p, d))
    for got, ref in ((x1.grad, x2.grad), (w1.grad, w2.grad), (b1.grad, b2.grad)):
        torch.testing.assert_close(got, ref)


def test_gradcheck_and_double_backward():
    w, bias = _data(2, 2, 3, 3)
    x = torch.rand(2, 2, 7, 8, dtype=D)
    args = tuple(t.requires_grad_() for t in (x, w, bias))

    def f(x, w, b):
        return few_channel_conv2d(x, w, b, 2, 1, 1)

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)  # create_graph=True takes the native backward


def test_only_the_gradients_asked_for():
    w, _ = _data(2, 1, 3, 5)
    x = torch.rand(2, 1, 9, 9, dtype=D, requires_grad=True)
    few_channel_conv2d(x, w, None, 1, 2).sum().backward()  # weight frozen, no bias
    torch.testing.assert_close(x.grad, torch.nn.grad.conv2d_input(x.shape, w, torch.ones(2, 3, 9, 9, dtype=D), 1, 2))
    assert w.grad is None
    w.requires_grad_()
    x.requires_grad_(False)
    few_channel_conv2d(x, w, None, 1, 2).sum().backward()  # input without gradient: plain F.conv2d
    assert w.grad is not None


@pytest.mark.parametrize("c", [1, 2, 4])
def test_float32_agrees_with_nn_conv2d(c):
    """The paper's first conv (9x9, 'same') at 28x28 in float32: the chunked spread-and-add sums in another order."""
    torch.manual_seed(0)
    ref = nn.Conv2d(c, 16, 9, padding=4)
    conv = FewChannelConv2d(c, 16, 9, padding=4)
    conv.load_state_dict(ref.state_dict())
    x = torch.rand(37, c, 28, 28)
    grads = []
    for m in (conv, ref):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.square().mean().backward()
        grads.append((y, xi.grad, m.weight.grad, m.bias.grad))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_computes_like_nn_conv2d():
    torch.manual_seed(0)
    ref = nn.Conv2d(1, 8, 9, padding=4)
    conv = FewChannelConv2d(1, 8, 9, padding=4)
    conv.load_state_dict(ref.state_dict())
    x = torch.rand(6, 1, 20, 20)
    out = []
    for m in (conv, ref):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(xi)
        y.float().square().mean().backward()
        out.append((y, xi.grad, m.weight.grad, m.bias.grad))
    assert out[0][0].dtype == torch.bfloat16
    assert [t.dtype for t in out[0][1:]] == [torch.float32] * 3  # gradients in the parameters' / input's dtype
    torch.testing.assert_close(out[0][0], out[1][0])
    for got, want in zip(out[0][1:], out[1][1:], strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


@pytest.mark.usefixtures("one_thread")
def test_torch_compile_of_a_module_using_it_matches_eager():
    """Dynamo traces the autograd.Function (fullgraph: no graph break) and the eager backend gives the same grads."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = nn.Sequential(FewChannelConv2d(1, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3))
    x = torch.rand(3, 1, 10, 10)
    grads = []
    for m in (torch.compile(net, backend="eager", fullgraph=True), net):
        xi = x.clone().requires_grad_()
        m(xi).square().sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1])
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_inductor_compile_fullgraph_matches_eager():
    """Inductor compiles the custom forward and backward too (no fallback, no graph break: fullgraph)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = nn.Sequential(FewChannelConv2d(1, 4, 9, padding=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3))
    x = torch.rand(5, 1, 12, 12)
    grads = []
    for m in (torch.compile(net, fullgraph=True), net):
        xi = x.clone().requires_grad_()
        net.zero_grad()
        m(xi).square().sum().backward()
        grads.append((xi.grad, net[0].weight.grad))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.usefixtures("one_thread")
def test_compiled_backward_calls_the_input_gradient_as_one_opaque_operator():
    """Under torch.compile the spread-and-add is one custom operator in the backward graph, not the chain of slice
    adds it is made of (inductor's code generation for that chain, batch 128, did not finish in minutes)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = nn.Sequential(FewChannelConv2d(1, 4, 9, padding=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 3))
    backend = AotEagerAndRecordGraphs()
    x = torch.rand(5, 1, 12, 12, requires_grad=True)
    torch.compile(net, backend=backend, fullgraph=True)(x).square().sum().backward()
    (bw,) = backend.bw_graphs
    code = bw.code
    assert "torchstn.few_channel_conv2d_input_grad" in code
    assert "slice_scatter" not in code and code.count("aten.add") < 5
    torch._dynamo.reset()


def test_the_input_gradient_operator_passes_opcheck():
    """Its fake (shape/dtype) implementation agrees with the real one, in float32 and in bfloat16 (float32 result)."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        grad_output = torch.rand(3, 4, 11, 13, generator=g).to(dtype)
        weight = torch.rand(4, 1, 5, 5, generator=g).to(dtype)
        args = (grad_output, weight, [11, 13], [1, 1], [2, 2], [1, 1])
        torch.library.opcheck(torch.ops.torchstn.few_channel_conv2d_input_grad, args)
        assert torch.ops.torchstn.few_channel_conv2d_input_grad(*args).dtype == torch.float32


def test_state_dict_is_that_of_nn_conv2d_both_ways():
    ref = nn.Conv2d(1, 6, 9, padding=4)
    conv = FewChannelConv2d(1, 6, 9, padding=4)
    conv.load_state_dict(ref.state_dict())
    ref2 = nn.Conv2d(1, 6, 9, padding=4)
    ref2.load_state_dict(conv.state_dict())
    x = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(conv(x), ref(x))
    torch.testing.assert_close(ref2(x), ref(x))
    assert "max_in_channels=4" in repr(conv)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_wide_inputs_and_asymmetric_same_padding_run_nn_conv2d():
    """Above max_in_channels, and for 'same' with an even kernel, the native path runs (grad_fn says which)."""
    x = torch.rand(2, 8, 9, 9, requires_grad=True)
    assert "Convolution" in type(FewChannelConv2d(8, 3, 3, padding=1)(x).grad_fn).__name__
    assert "Convolution" not in type(FewChannelConv2d(8, 3, 3, padding=1, max_in_channels=8)(x).grad_fn).__name__
    x1 = torch.rand(2, 1, 9, 9, requires_grad=True)
    same_even = FewChannelConv2d(1, 3, 4, padding="same")
    assert "Convolution" in type(same_even(x1).grad_fn).__name__
    same_odd = FewChannelConv2d(1, 3, 5, padding="same")
    assert "Convolution" not in type(same_odd(x1).grad_fn).__name__
    torch.testing.assert_close(same_odd(x1), F.conv2d(x1, same_odd.weight, same_odd.bias, padding="same"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": 2}, "groups=1 only"),
        ({"padding_mode": "reflect"}, "padding_mode='zeros' only"),
        ({"max_in_channels": -1}, "max_in_channels must be"),
    ],
)
def test_unsupported_configurations_are_refused(kwargs, match):
    with pytest.raises(OptionError, match=match):
        FewChannelConv2d(2, 4, 3, padding=1, **kwargs)


def test_a_bad_padding_string_is_refused():
    x = torch.rand(1, 1, 5, 5, requires_grad=True)
    with pytest.raises(OptionError, match="'valid' or 'same'"):
        few_channel_conv2d(x, torch.rand(2, 1, 3, 3), padding="full")


def test_grid_of_small_shapes_against_conv2d_input():
    """Channels 1..4, kernels 3..9, stride 1..2, padding 0..k//2, dilation 1..2, batch 1..3 (float64)."""
    g = torch.Generator().manual_seed(2)
    for c, k, s, d, b in itertools.product((1, 2, 4), (3, 6, 9), (1, 2), (1, 2), (1, 3)):
        p = k // 2
        H, W = d * (k - 1) + 3, d * (k - 1) + 4
        x = torch.randn(b, c, H, W, dtype=D, generator=g, requires_grad=True)
        w = torch.randn(2, c, k, k, dtype=D, generator=g)
        y = few_channel_conv2d(x, w, None, s, p, d)
        go = torch.randn(y.shape, dtype=D, generator=g)
        y.backward(go)
        torch.testing.assert_close(x.grad, torch.nn.grad.conv2d_input(x.shape, w, go, s, p, d))


def test_torch_jit_script_compiles_an_equivalent_plain_conv():
    """A model holding a FewChannelConv2d (e.g. the Table 1 CNN classifier) still scripts: torch compiles the
    nn.Conv2d of __prepare_scriptable__, which shares the parameters and computes the same output."""
    from torchstn.models.classifiers import cnn_classifier

    torch.manual_seed(0)
    net = cnn_classifier(1, (28, 28), (6, 8), 10)
    x = torch.rand(3, 1, 28, 28)
    expected = net(x)
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), expected, atol=1e-6)
    assert scripted(torch.rand(5, 1, 28, 28)).shape == (5, 10)  # another batch size
    with torch.no_grad():
        net[0].weight.mul_(2.0)  # the parameters are shared, not copied
    assert not torch.allclose(scripted(x), expected, atol=1e-3)
