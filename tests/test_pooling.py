"""BoxAvgPool2d: torch's average pooling as a depthwise convolution, equal in value and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from zc_proxies.proxies.flops import count_flops
from zc_proxies.runs.layout import apply_layout
from zc_proxies.runs.pooling import BoxAvgPool2d, box_eligible, use_box_avgpool

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def _grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output, input gradient and the gradient of (input gradient . g) by the input (second order)."""
    x = x.detach().requires_grad_(True)
    y = module(x)
    (gx,) = torch.autograd.grad(y, x, g * y, create_graph=True)
    (ggx,) = torch.autograd.grad((gx * g).sum(), x)
    return y, gx, ggx


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=3, padding=1, count_include_pad=False),
                                dict(kernel_size=5, padding=2, count_include_pad=False),
                                dict(kernel_size=(3, 5), padding=(1, 2), count_include_pad=False)],
                         ids=["3-incl", "3-excl", "5-excl", "3x5-excl"])
@pytest.mark.parametrize("size", [(7, 9), (1, 2), (2, 2)], ids=["7x9", "1x2", "2x2"])
def test_equals_torch_average_pooling_in_float64(layout, kw, size):
    native = nn.AvgPool2d(stride=1, **kw)
    box = use_box_avgpool(copy.deepcopy(native))
    assert type(box) is BoxAvgPool2d
    torch.manual_seed(0)
    x = torch.randn(3, 4, *size, dtype=torch.float64).contiguous(memory_format=layout)
    g = torch.randn(3, 4, *size, dtype=torch.float64)
    for want, got in zip(_grads(native, x, g), _grads(box, x, g)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_nhwc_float32_within_rounding_and_layout_kept():
    native = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    box = use_box_avgpool(copy.deepcopy(native))
    torch.manual_seed(1)
    x = torch.randn(8, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    want, got = native(x), box(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=2e-7, atol=2e-7)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=1),
                                dict(kernel_size=2, stride=1), dict(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=1, padding=1, divisor_override=4)],
                         ids=["stride-2", "no-padding", "even-kernel", "ceil-mode", "divisor"])
def test_other_pools_are_left_to_torch(kw):
    native = nn.AvgPool2d(**kw)
    assert not box_eligible(native)
    net = nn.Sequential(native)
    use_box_avgpool(net)
    assert type(net[0]) is nn.AvgPool2d


def test_only_plain_eligible_pools_change_class_and_counts_stay():
    class Custom(nn.AvgPool2d):
        pass

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                             Custom(3, 1, 1), nn.AvgPool2d(2), nn.MaxPool2d(3, 1, 1))

    plain, fast = net(), net()
    use_box_avgpool(fast)
    assert [type(m) for m in fast] == [nn.Conv2d, BoxAvgPool2d, Custom, nn.AvgPool2d, nn.MaxPool2d]
    assert list(fast.state_dict()) == list(plain.state_dict())
    cpu = dict(device=torch.device("cpu"), dtype=torch.float32)
    assert count_flops(fast, (3, 8, 8), **cpu) == count_flops(plain, (3, 8, 8), **cpu) > 0


def test_the_nhwc_layout_brings_box_pools_and_nchw_leaves_them():
    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(3, 1, 1, count_include_pad=False))

    x = torch.randn(2, 3, 6, 6)
    fast, _ = apply_layout(net(), x, "nhwc")
    plain, _ = apply_layout(net(), x, "nchw")
    assert type(fast[1]) is BoxAvgPool2d and type(plain[1]) is nn.AvgPool2d


def test_an_unbatched_input_runs_torch_kernel():
    box = use_box_avgpool(nn.Sequential(nn.AvgPool2d(3, 1, 1)))[0]
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(box(x[0]), nn.AvgPool2d(3, 1, 1)(x[0]))  # 3-d input: torch's kernel
