"""A 2-D convolution whose input gradient is fast when the input has few channels.

The paper's classifiers put a 9x9 convolution with one input channel right behind the spatial transformer, so its
input gradient (the gradient that flows back into the transformer) is computed every training step. The CPU's
native backward-data kernel is slow for one input channel. Here the input gradient is a matrix product (the
gradient of every output pixel spread over the kernel, ``weight^T @ grad_output``) followed by a shift-and-add of
the kernel taps, one row of taps and then one column at a time, over small batch chunks that stay in the cache.
The weight and bias gradients still come from the native kernel, asked for without the input gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchstn.errors import OptionError

__all__ = ["FewChannelConv2d", "few_channel_conv2d"]

#: bytes of spread gradient (``weight^T @ grad_output``) per batch chunk: small enough to stay in the cache
_CHUNK_BYTES = 2 << 20


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = (int(x) for x in v)
    return (a, b)


def _spread_and_add(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    padded: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """The gradient w.r.t. the zero-padded input, shape ``(B, C, Hp, Wp)``, accumulated in float32 or wider."""
    B, Co, Ho, Wo = grad_output.shape
    _, C, kh, kw = weight.shape
    (Hp, Wp), (sh, sw), (dh, dw) = padded, stride, dilation
    acc = torch.promote_types(grad_output.dtype, torch.float32)
    out = torch.zeros(B, C, Hp, Wp, dtype=acc, device=grad_output.device)
    spread_w = weight.reshape(Co, C * kh * kw).t()
    per_sample = C * kh * kw * Ho * Wo * grad_output.element_size()
    chunk = max(1, _CHUNK_BYTES // per_sample)
    rows = torch.empty(min(chunk, B), C, kh, Ho, Wp, dtype=acc, device=grad_output.device)
    for s in range(0, B, chunk):
        n = min(chunk, B - s)
        cols = torch.matmul(spread_w, grad_output[s : s + n].reshape(n, Co, Ho * Wo)).view(n, C, kh, kw, Ho, Wo)
        r = rows[:n]
        r.zero_()
        for j in range(kw):  # the taps of one kernel column land on the input columns j*dw, j*dw + sw, ...
            r[..., j * dw : j * dw + sw * (Wo - 1) + 1 : sw] += cols[:, :, :, j]
        o = out[s : s + n]
        for i in range(kh):  # ... and those of one kernel row on the input rows i*dh, i*dh + sh, ...
            o[:, :, i * dh : i * dh + sh * (Ho - 1) + 1 : sh, :] += r[:, :, i]
    return out


@torch.library.custom_op("torchstn::few_channel_conv2d_input_grad", mutates_args=())
def _input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    in_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """The input gradient ``(B, C, H, W)`` by spread-and-add. A custom operator so that ``torch.compile`` calls this
    eager code as one opaque kernel instead of fusing the shift-and-add chain (inductor's code generation for that
    chain of nested masked slices does not finish in minutes)."""
    (ph, pw), (H, W) = padding, in_size
    full = _spread_and_add(grad_output, weight, (H + 2 * ph, W + 2 * pw), _pair(stride), _pair(dilation))
    return full[:, :, ph : ph + H, pw : pw + W].contiguous()


@_input_grad.register_fake
def _(grad_output, weight, in_size, stride, padding, dilation):
    acc = torch.promote_types(grad_output.dtype, torch.float32)
    return grad_output.new_empty((grad_output.shape[0], weight.shape[1], *in_size), dtype=acc)


class _FewChannelConv2dFn(torch.autograd.Function):
    """``F.conv2d`` forward; backward: native weight/bias gradients, input gradient by spread-and-add."""

    @staticmethod
    def forward(ctx: Any, x, weight, bias, stride, padding, dilation):
        dev = x.device.type
        if torch.is_autocast_enabled(dev):  # do what autocast does for conv2d, then keep the cast tensors
            dtype = torch.get_autocast_dtype(dev)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast(dev, enabled=False):
            y = F.conv2d(x, weight, bias, stride, padding, dilation)
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, bias is not None)
        return y

    @staticmethod
    def backward(ctx: Any, grad_output):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and has_bias
        grad_output = grad_output.to(x.dtype).contiguous()
        bias_sizes = [weight.shape[0]] if has_bias else None
        conv = (list(stride), list(padding), list(dilation), False, [0, 0], 1)
        if torch.is_grad_enabled():  # create_graph=True: the native backward, which autograd can differentiate
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_output, x, weight, bias_sizes, *conv, [need_x, need_w, need_b]
            )
            return gx, gw, gb, None, None, None
        gx = gw = gb = None
        if need_w or need_b:
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad_output, x, weight, bias_sizes, *conv, [False, need_w, need_b]
            )
        if need_x:
            gx = _input_grad(grad_output, weight, list(x.shape[-2:]), list(stride), list(padding), list(dilation))
        return gx, gw, gb, None, None, None


def _int_padding(
    padding: str | int | tuple[int, ...], kernel: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int] | None:
    """Symmetric integer padding per side, or None where only the native kernel can do it ('same', even kernel)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return None if any(t % 2 for t in total) else (total[0] // 2, total[1] // 2)
    if isinstance(padding, str):
        raise OptionError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    return _pair(padding)


def few_channel_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, ...] = 1,
    padding: str | int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
) -> torch.Tensor:
    """``F.conv2d`` (``groups=1``, zero padding) with the fast input gradient of :class:`FewChannelConv2d`.

    Only when ``x`` needs a gradient (and autograd records) does the custom path run; otherwise, and for a
    ``'same'`` padding that is not symmetric, this is plain ``F.conv2d``. With ``create_graph=True`` the backward is
    the native one, so double backward works (at the native speed).

    Args:
        x: ``(B, C, H, W)`` input.
        weight: ``(O, C, kh, kw)`` kernel.
        bias: ``(O,)`` or None.
        stride, padding, dilation: as for ``F.conv2d``.

    Returns:
        ``(B, Co, Ho, Wo)``, the same as ``F.conv2d`` up to rounding.

    Raises:
        OptionError: ``padding`` is a string other than ``'valid'`` / ``'same'``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 12, 12, dtype=torch.float64, requires_grad=True)
        >>> w = torch.rand(4, 1, 5, 5, dtype=torch.float64)
        >>> few_channel_conv2d(x, w, padding=2).sum().backward()
        >>> ones = torch.ones(2, 4, 12, 12, dtype=torch.float64)
        >>> torch.allclose(x.grad, torch.nn.grad.conv2d_input(x.shape, w, ones, padding=2))
        True
    """
    kernel = (int(weight.shape[-2]), int(weight.shape[-1]))
    dil = _pair(dilation)
    pad = _int_padding(padding, kernel, dil)
    if isinstance(padding, str) and _pair(stride) != (1, 1):
        pad = None  # F.conv2d refuses a strided 'same'
    if pad is None or not (x.requires_grad and torch.is_grad_enabled()):
        return F.conv2d(x, weight, bias, stride, padding, dilation)
    return _FewChannelConv2dFn.apply(x, weight, bias, _pair(stride), pad, dil)


class FewChannelConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose input gradient is fast for inputs with few channels; a drop-in (same state_dict keys).

    When the input needs a gradient and ``in_channels <= max_in_channels`` the forward runs
    :func:`few_channel_conv2d`: the weight and bias gradients come from the native kernel (asked for without the
    input gradient), the input gradient from a matrix product and a shift-and-add over cache-sized batch chunks.
    Otherwise (no input gradient, e.g. a first layer on the data; wide inputs) it is exactly ``nn.Conv2d``. The
    crossover, measured for forward + backward of a 9x9 'same' conv to 62 channels on 28x28 and 42x42 inputs, batch
    128, one CPU thread: the custom path pays most for one input channel, less with each added one, about breaks
    even at 4 and loses at 8; hence the default ``max_in_channels=4`` (``benchmarks/bench_conv_input_grad.py`` times
    the one-channel case). Under ``torch.autocast`` it computes in the autocast dtype as
    ``nn.Conv2d`` does. Double backward works: with ``create_graph=True`` the backward is the native one.

    Args:
        *args, **kwargs: as for ``nn.Conv2d``; ``groups`` must be 1 and ``padding_mode`` ``'zeros'``.
        max_in_channels: widest input that takes the custom path.

    Raises:
        OptionError: ``groups != 1``, a ``padding_mode`` other than ``'zeros'``, or ``max_in_channels < 0``.

    Example:
        >>> import torch
        >>> conv = FewChannelConv2d(1, 8, 9, padding=4)
        >>> x = torch.rand(2, 1, 28, 28, requires_grad=True)
        >>> conv(x).shape
        torch.Size([2, 8, 28, 28])
        >>> sorted(conv.state_dict()) == sorted(torch.nn.Conv2d(1, 8, 9).state_dict())
        True
    """

    def __init__(self, *args: Any, max_in_channels: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise OptionError(f"FewChannelConv2d supports groups=1 only, got groups={self.groups}; use nn.Conv2d")
        if self.padding_mode != "zeros":
            raise OptionError(
                f"FewChannelConv2d supports padding_mode='zeros' only, got {self.padding_mode!r}; use nn.Conv2d"
            )
        if isinstance(max_in_channels, bool) or not isinstance(max_in_channels, int) or max_in_channels < 0:
            raise OptionError(f"max_in_channels must be an int >= 0, got {max_in_channels!r}")
        self.max_in_channels = max_in_channels

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.in_channels > self.max_in_channels:
            return super().forward(input)
        return few_channel_conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_in_channels={self.max_in_channels}"

    def __prepare_scriptable__(self) -> nn.Conv2d:
        """``torch.jit.script`` compiles an ``nn.Conv2d`` that shares this module's parameters (a custom autograd
        function cannot be scripted; a scripted module computes the same forward). As for every module with this
        hook, torch puts the returned module in the place of this one in the scripted module's parent."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,  # type: ignore[arg-type]
            self.stride,  # type: ignore[arg-type]
            self.padding,  # type: ignore[arg-type]
            self.dilation,  # type: ignore[arg-type]
            self.groups,
            self.bias is not None,
            self.padding_mode,
            device="meta",
        )
        conv.weight = self.weight
        conv.bias = self.bias
        return conv
