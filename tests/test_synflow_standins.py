"""SynFlow runs the caller's network with absolute float64 stand-ins instead of a deep copy.

These checks pin what that design must keep: BatchNorm put back exactly as it was
(also after an error, also when the module already had its own ``forward``), the
same value whatever the run's memory layout, and a clear error where a layer's
weight is computed rather than held as a parameter.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from zc_proxies import score
from zc_proxies.errors import ModelError
from zc_proxies.proxies.synflow import batchnorm_bypassed


def small_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])


def test_batchnorm_bypassed_is_an_identity_inside_and_restored_after():
    net = small_net().train()
    bn = net[1]
    x = torch.randn(2, 6, 5, 5)
    with batchnorm_bypassed(net):
        assert torch.equal(bn(x), x)
    assert "forward" not in vars(bn)
    assert not torch.equal(bn(x), x)


def test_batchnorm_bypassed_keeps_an_instance_forward_and_survives_errors():
    net = small_net()
    marker = lambda t: t + 1.0  # noqa: E731
    net[4].forward = marker
    with pytest.raises(RuntimeError, match="boom"), batchnorm_bypassed(net):
        assert torch.equal(net[4](torch.zeros(1, 4, 2, 2)), torch.zeros(1, 4, 2, 2))
        raise RuntimeError("boom")
    assert vars(net[4])["forward"] is marker
    assert "forward" not in vars(net[1])


@pytest.mark.parametrize("name", ["synflow", "synflow_bn"])
def test_same_value_in_either_memory_layout(name):
    nchw = score(small_net(), batch(), name)
    nhwc = score(small_net().to(memory_format=torch.channels_last),
                 (batch()[0].contiguous(memory_format=torch.channels_last), batch()[1]), name)
    assert nhwc == nchw


def test_synflow_leaves_batchnorm_and_buffers_of_the_caller_alone():
    net = small_net().train()
    running = net[1].running_mean.clone()
    batches = int(net[1].num_batches_tracked)
    score(net, batch(), "synflow_bn")
    assert torch.equal(net[1].running_mean, running) and int(net[1].num_batches_tracked) == batches
    assert "forward" not in vars(net[1])


class _Symmetric(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return (w + w.flip(-1)) / 2


def test_a_computed_weight_is_named_not_silently_scored():
    net = small_net()
    parametrize.register_parametrization(net[0], "weight", _Symmetric())
    with pytest.raises(ModelError, match="Conv2d.*parametrization"):
        score(net, batch(), "synflow")
