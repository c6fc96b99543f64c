"""ExactBatchNorm2d: the native layer's numbers in float64, exact statistics in NHWC float32, exact second order."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zc_proxies.runs.batchnorm import ExactBatchNorm2d, use_exact_batchnorm

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def _pair(channels: int = 5, dtype: torch.dtype = torch.float64, **kw) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    native = nn.BatchNorm2d(channels, **kw).to(dtype)
    if native.affine:
        with torch.no_grad():
            native.weight.uniform_(0.5, 1.5)
            native.bias.uniform_(-1, 1)
    return native, use_exact_batchnorm(copy.deepcopy(native))


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
    native, exact = _pair(**kw)
    x = (torch.randn(4, 5, 6, 7, dtype=torch.float64) * 2 + 3).contiguous(memory_format=layout)
    g = torch.randn(4, 5, 6, 7, dtype=torch.float64)
    ours, theirs = _run(exact, x, g), _run(native, x, g)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert ours[0].is_contiguous(memory_format=layout)  # the layout is kept


def test_gradients_pass_gradcheck():
    _, exact = _pair()
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: exact(t), (x,))


def test_nhwc_float32_statistics_are_as_exact_as_nchw():
    """torch's NHWC kernel is ~100x further from float64 here; the cascade-sum statistics are not."""
    torch.manual_seed(0)
    x64 = torch.randn(64, 16, 32, 32, dtype=torch.float64) * 3 + 1.5
    w, b = torch.rand(16) + 0.5, torch.rand(16)
    exact = F.batch_norm(x64, None, None, w.double(), b.double(), True, 0.1, 1e-5)
    module = use_exact_batchnorm(nn.BatchNorm2d(16))
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b)
        out = module(x64.float().contiguous(memory_format=torch.channels_last))
    error = float((out.double() - exact).norm() / exact.norm())
    assert error < 5e-7


def test_a_mean_far_above_the_spread_still_gives_exact_statistics():
    """mean 100, spread 1: E[x^2] - E[x]^2 alone would lose 4 digits; the centred second pass keeps them.

    A float32 mean of ~100 is itself rounded by up to 2^-24 * 100 = 6e-6 (in units
    of the spread), which bounds any kernel that normalises with a float32 mean;
    torch's NHWC kernel is several times further off.
    """
    torch.manual_seed(0)
    x = (torch.randn(32, 4, 16, 16, dtype=torch.float64) + 100).float().contiguous(memory_format=torch.channels_last)
    exact = F.batch_norm(x.double(), None, None, None, None, True, 0.1, 1e-5)  # the same float32 inputs

    def error(out: torch.Tensor) -> float:
        return float((out.double() - exact).norm() / exact.norm())

    module = use_exact_batchnorm(nn.BatchNorm2d(4, affine=False))
    with torch.no_grad():
        out = module(x)
    assert error(out) < 6e-6
    assert error(out) < error(F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5)) / 3
    torch.testing.assert_close(module.running_var.double(), 0.9 + 0.1 * x.double().var(dim=(0, 2, 3)), rtol=1e-5,
                               atol=0)


def test_eval_mode_uses_the_running_statistics():
    native, exact = _pair()
    native.eval()
    exact.eval()
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(exact(x), native(x), rtol=0, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
def test_second_order_gradients_equal_the_native_layers(layout):
    """GraSP's Hessian-vector product differentiates the gradient: through the exact layer it is exact too."""
    native, exact = _pair()
    x = (torch.randn(4, 5, 3, 3, dtype=torch.float64) + 2).contiguous(memory_format=layout)
    v = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    results = []
    for module in (native, exact):
        xi = x.clone().requires_grad_(True)
        params = [xi, module.weight, module.bias]
        grads = torch.autograd.grad(module(xi).pow(3).sum(), params, create_graph=True)
        dot = sum((g * u).sum() for g, u in zip(grads, (v, torch.ones(5), torch.ones(5))))
        results.append(torch.autograd.grad(dot, params))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_second_order_gradients_pass_gradgradcheck():
    _, exact = _pair()
    x = torch.randn(3, 5, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: exact(t), (x,))


def test_only_plain_batchnorm2d_modules_change_class():
    class Custom(nn.BatchNorm2d):
        pass

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Custom(4), nn.BatchNorm1d(4))
    names = [n for n, _ in net.state_dict().items()]
    use_exact_batchnorm(net)
    assert [type(m) for m in net] == [nn.Conv2d, ExactBatchNorm2d, Custom, nn.BatchNorm1d]
    assert list(net.state_dict()) == names


def test_the_nhwc_layout_brings_exact_statistics_and_nchw_leaves_the_model_alone():
    from zc_proxies.runs.layout import apply_layout

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

    x = torch.randn(2, 3, 5, 5)
    fast, fast_x = apply_layout(net(), x, "nhwc")
    plain, plain_x = apply_layout(net(), x, "nchw")
    assert type(fast[1]) is ExactBatchNorm2d and fast_x.is_contiguous(memory_format=torch.channels_last)
    assert type(plain[1]) is nn.BatchNorm2d and plain_x is x
