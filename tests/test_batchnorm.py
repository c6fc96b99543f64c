"""Two-pass BatchNorm: the native layer's numbers in float64, exact statistics in NHWC float32, first order only."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zc_proxies.runs.batchnorm import TwoPassBatchNorm2d, use_two_pass_batchnorm

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def _pair(channels: int = 5, dtype: torch.dtype = torch.float64, **kw) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    native = nn.BatchNorm2d(channels, **kw).to(dtype)
    if native.affine:
        with torch.no_grad():
            native.weight.uniform_(0.5, 1.5)
            native.bias.uniform_(-1, 1)
    return native, use_two_pass_batchnorm(copy.deepcopy(native))


def _run(module: nn.Module, x: torch.Tensor, g: torch.Tensor, steps: int = 2) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    for _ in range(steps):
        y = module(x)
    wanted = [x] + [p for p in (module.weight, module.bias) if p is not None]
    grads = torch.autograd.grad(y, wanted, g)
    buffers = [b.double() for b in module.buffers()]
    return [y, *grads, *buffers]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}],
                         ids=["default", "cumulative", "no-affine", "untracked"])
def test_equals_the_native_layer_in_float64(layout, kw):
    native, two_pass = _pair(**kw)
    x = (torch.randn(4, 5, 6, 7, dtype=torch.float64) * 2 + 3).contiguous(memory_format=layout)
    g = torch.randn(4, 5, 6, 7, dtype=torch.float64)
    ours, theirs = _run(two_pass, x, g), _run(native, x, g)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert ours[0].is_contiguous(memory_format=layout)  # the layout is kept


def test_gradients_pass_gradcheck():
    _, two_pass = _pair()
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: two_pass(t), (x,))


def test_nhwc_float32_statistics_are_as_exact_as_nchw():
    """torch's NHWC kernel is ~100x further from float64 here; the two-pass statistics are not."""
    x64 = torch.randn(64, 16, 32, 32, dtype=torch.float64) * 3 + 1.5
    w, b = torch.rand(16) + 0.5, torch.rand(16)
    exact = F.batch_norm(x64, None, None, w.double(), b.double(), True, 0.1, 1e-5)
    module = use_two_pass_batchnorm(nn.BatchNorm2d(16))
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b)
        out = module(x64.float().contiguous(memory_format=torch.channels_last))
    error = float((out.double() - exact).norm() / exact.norm())
    assert error < 5e-7


def test_eval_mode_uses_the_running_statistics():
    native, two_pass = _pair()
    native.eval()
    two_pass.eval()
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(two_pass(x), native(x), rtol=0, atol=0)


def test_second_order_gradients_are_refused_not_wrong():
    _, two_pass = _pair()
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(two_pass(x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_only_plain_batchnorm2d_modules_change_class():
    class Custom(nn.BatchNorm2d):
        pass

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Custom(4), nn.BatchNorm1d(4))
    names = [n for n, _ in net.state_dict().items()]
    use_two_pass_batchnorm(net)
    assert [type(m) for m in net] == [nn.Conv2d, TwoPassBatchNorm2d, Custom, nn.BatchNorm1d]
    assert list(net.state_dict()) == names
